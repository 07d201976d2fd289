package backup

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"keel.dev/keel/agent/atomicfile"
)

// The restore's states, kept in the journal beside the staged files. The
// agent's boot resumes from the one it finds: a restore is all or
// nothing, rolled forward after a power cut.
const (
	// StateStaged: every file is staged and checked; the next boot puts
	// them in place, before any subsystem reads its configuration.
	StateStaged = "staged"
	// StateApplied: everything is in place; the network may still wait
	// for its confirmation (Journal.Network).
	StateApplied = "applied"
)

// Target is where a staged section goes.
type Target struct {
	Section string `json:"section"`
	Path    string `json:"path"` // the file or folder it replaces
	// Discard is removed before the section goes in place (an app's data
	// volume, which the app's folder then fills anew).
	Discard []string `json:"discard,omitempty"`
}

// Journal is the restore's saved state.
type Journal struct {
	State   string   `json:"state"`
	Targets []Target `json:"targets"`
	// Network, when the restore changed the network configuration: the
	// configuration before (kept at PreviousPath) comes back unless the
	// change is confirmed with Token after the boot that applies it.
	Network *NetworkChange `json:"network,omitempty"`
	Summary []string       `json:"summary"` // what the restore changed, as sentences
}

// NetworkChange is a restore's network change waiting for confirmation.
type NetworkChange struct {
	Token        string `json:"token"`
	PreviousPath string `json:"previous_path"`
}

const journalName = "journal.json"

// LoadJournal reads dir's journal; none is (nil, nil).
func LoadJournal(dir string) (*Journal, error) {
	b, err := os.ReadFile(filepath.Join(dir, journalName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("restore journal: %w", err)
	}
	var j Journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("restore journal %s is damaged: %w", dir, err)
	}
	return &j, nil
}

// Save writes the journal atomically.
func (j *Journal) Save(dir string) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, journalName), append(b, '\n'), 0o600)
}

// Apply puts every staged section of dir in place and records it. Each
// step can be repeated: a section whose staged copy is gone is in place
// already. The previous content goes aside (path+".before-restore") until
// the new one is in place, then away.
func (j *Journal) Apply(dir string) error {
	if j.State != StateStaged {
		return nil
	}
	for _, t := range j.Targets {
		staged := filepath.Join(dir, "sections", t.Section)
		aside := t.Path + ".before-restore"
		if _, err := os.Lstat(staged); errors.Is(err, fs.ErrNotExist) {
			if err := os.RemoveAll(aside); err != nil {
				return fmt.Errorf("restore %s: %w", t.Section, err)
			}
			continue
		}
		for _, d := range t.Discard {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("restore %s: remove %s: %w", t.Section, d, err)
			}
		}
		if err := os.MkdirAll(filepath.Dir(t.Path), 0o700); err != nil {
			return fmt.Errorf("restore %s: %w", t.Section, err)
		}
		if _, err := os.Lstat(t.Path); err == nil {
			if err := os.RemoveAll(aside); err != nil {
				return err
			}
			if err := os.Rename(t.Path, aside); err != nil {
				return fmt.Errorf("restore %s: set %s aside: %w", t.Section, t.Path, err)
			}
		}
		if err := os.Rename(staged, t.Path); err != nil {
			return fmt.Errorf("restore %s: put it in place: %w", t.Section, err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(t.Path)); err != nil {
			return err
		}
		if err := os.RemoveAll(aside); err != nil {
			return err
		}
	}
	j.State = StateApplied
	return j.Save(dir)
}
