package failover

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/atomicfile"
)

// journal is a sync that is staged and committed: everything it changes
// is listed, with the staged files already written, so applying it again
// after a power cut finishes the same change. A sync cut before its
// journal is written changed nothing.
type journal struct {
	Created time.Time `json:"created"`
	From    string    `json:"from"`
	Epoch   uint64    `json:"epoch"`
	// AppDir is the application's data folder ("" when nothing of it
	// changes); staged files are in AppDir/.keel-sync/stage.
	AppDir string `json:"app_dir,omitempty"`
	// Snapshot names the snapshot that keeps what this box had and the
	// sync replaces or removes (after a split brain it lost).
	Snapshot string          `json:"snapshot,omitempty"`
	Remove   []string        `json:"remove,omitempty"` // deepest first
	Dirs     []entry         `json:"dirs,omitempty"`   // shallowest first
	Files    []staged        `json:"files,omitempty"`
	Patches  []patch         `json:"patches,omitempty"`
	Moves    []move          `json:"moves,omitempty"`
	Links    []entry         `json:"links,omitempty"`
	Meta     []entry         `json:"meta,omitempty"` // unchanged content, changed owner, mode or time
	Config   []configChange  `json:"config,omitempty"`
	Network  json.RawMessage `json:"network,omitempty"`
	Settings *Settings       `json:"settings,omitempty"`
	Shared   []SharedAddress `json:"shared,omitempty"`

	newDirs int // folders this box lacks, for the report
}

// staged is a file of the new content, written in the stage folder.
type staged struct {
	Name  string `json:"name"` // in the stage folder
	Entry entry  `json:"entry"`
}

// patch rewrites the blocks of a file that changed in place, from the
// stage's blob; then the file takes the entry's size and metadata.
type patch struct {
	Entry  entry        `json:"entry"`
	Blocks []patchBlock `json:"blocks"`
}

type patchBlock struct {
	I  int   `json:"i"`  // the block's index in the file
	At int64 `json:"at"` // where its new bytes are in the blob
	N  int   `json:"n"`
}

// move renames a file this box has to the path the primary has it at.
type move struct {
	From  string `json:"from"`
	Entry entry  `json:"entry"`
}

// blobName is the stage's file of patches' new blocks.
const blobName = "blob"

// configChange is a configuration file the sync replaces; Staged ""
// removes it (the primary has none).
type configChange struct {
	Section string `json:"section"`
	Path    string `json:"path"`
	Staged  string `json:"staged,omitempty"`
}

const journalFile = "sync-journal.json"

func (s *Service) stageDir() string { return filepath.Join(s.Dir, "stage") }

func appStage(appDir string) string { return filepath.Join(appDir, syncDir, "stage") }

func appSnapshots(appDir string) string { return filepath.Join(appDir, syncDir, "snapshots") }

func (s *Service) loadJournal() (*journal, error) {
	b, err := os.ReadFile(filepath.Join(s.Dir, journalFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		// A journal is written atomically: a damaged one was never
		// committed; drop it and what it staged.
		os.Remove(filepath.Join(s.Dir, journalFile))
		return nil, fmt.Errorf("the sync journal is damaged (%v); the sync it described did not happen", err)
	}
	return &j, nil
}

// commit makes the staged sync durable: from here it happens, now or
// after the next boot.
func (s *Service) commit(j *journal) error {
	b, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(s.Dir, journalFile), b, 0o600)
}

// resumeJournal finishes a committed sync at boot.
func (s *Service) resumeJournal() error {
	j, err := s.loadJournal()
	if err != nil || j == nil {
		s.cleanStage("")
		return err
	}
	if j.AppDir != "" && s.App != nil {
		// Mounts the application's data volume, where the staged files are.
		if _, err := s.App.DataDir(); err != nil {
			return fmt.Errorf("the application's data folder: %w", err)
		}
	}
	s.log().Info("finishing a sync a restart interrupted", "from", j.From, "created", j.Created)
	return s.apply(j)
}

// apply carries out a committed journal; every step may be repeated.
func (s *Service) apply(j *journal) error {
	if j.AppDir != "" {
		if err := j.applyApp(); err != nil {
			return fmt.Errorf("apply the synced application data: %w", err)
		}
	}
	var errs []error
	for _, c := range j.Config {
		if err := applyConfig(c); err != nil {
			errs = append(errs, err)
		}
	}
	for _, c := range j.Config {
		if sec := s.section(c.Section); sec != nil && sec.Reload != nil {
			if err := sec.Reload(); err != nil {
				errs = append(errs, fmt.Errorf("reload %s: %w", c.Section, err))
			}
		}
	}
	if len(j.Network) > 0 && s.Network != nil {
		if err := s.Network.ApplySynced(j.Network); err != nil {
			errs = append(errs, fmt.Errorf("apply the synced DNS and NTP servers: %w", err))
		}
	}
	if j.Settings != nil || j.Shared != nil {
		if err := s.update(func(st *State) {
			if j.Settings != nil {
				st.Settings = *j.Settings
			}
			if j.Shared != nil {
				st.Shared = j.Shared
			}
		}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(s.Dir, journalFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	atomicfile.SyncDir(s.Dir)
	s.cleanStage(j.AppDir)
	return nil
}

func (s *Service) section(name string) *Section {
	for i := range s.Sections {
		if s.Sections[i].Name == name {
			return &s.Sections[i]
		}
	}
	return nil
}

// cleanStage removes what an uncommitted or finished sync staged.
func (s *Service) cleanStage(appDir string) {
	os.RemoveAll(s.stageDir())
	if appDir == "" && s.App != nil {
		appDir, _ = s.appDirIfMounted()
	}
	if appDir != "" {
		os.RemoveAll(appStage(appDir))
	}
}

func (s *Service) appDirIfMounted() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAppDir, nil
}

func applyConfig(c configChange) error {
	if c.Staged == "" {
		if err := os.Remove(c.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", c.Path, err)
		}
		return nil
	}
	if _, err := os.Stat(c.Staged); errors.Is(err, fs.ErrNotExist) {
		return nil // in place already
	}
	if err := os.MkdirAll(filepath.Dir(c.Path), 0o700); err != nil {
		return err
	}
	if err := os.Rename(c.Staged, c.Path); err != nil {
		return fmt.Errorf("put %s in place: %w", c.Section, err)
	}
	return atomicfile.SyncDir(filepath.Dir(c.Path))
}

func (j *journal) path(rel string) string { return filepath.Join(j.AppDir, filepath.FromSlash(rel)) }

// keep moves what is at rel into the journal's snapshot, if it has one
// and rel is still there; without a snapshot it removes it.
func (j *journal) keep(rel string) error {
	p := j.path(rel)
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if j.Snapshot == "" {
		return os.RemoveAll(p)
	}
	dst := filepath.Join(appSnapshots(j.AppDir), j.Snapshot, "files", filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		// Kept already by an earlier run of this journal; what is at p
		// now came later.
		return os.RemoveAll(p)
	}
	return os.Rename(p, dst)
}

func (j *journal) applyApp() error {
	for _, mv := range j.Moves {
		to := j.path(mv.Entry.Path)
		if _, err := os.Lstat(j.path(mv.From)); errors.Is(err, fs.ErrNotExist) {
			continue // moved already
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		if err := os.Rename(j.path(mv.From), to); err != nil {
			return fmt.Errorf("move %s to %s: %w", mv.From, mv.Entry.Path, err)
		}
		setMeta(to, mv.Entry)
	}
	for _, rel := range j.Remove {
		if err := j.keep(rel); err != nil {
			return err
		}
	}
	for _, d := range j.Dirs {
		p := j.path(d.Path)
		if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
			if err := j.keep(d.Path); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(p, os.FileMode(d.Mode)&fs.ModePerm|0o700); err != nil {
			return err
		}
	}
	stage := appStage(j.AppDir)
	for _, f := range j.Files {
		src := filepath.Join(stage, f.Name)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			continue // in place already
		}
		if j.Snapshot != "" {
			if err := j.keep(f.Entry.Path); err != nil {
				return err
			}
		}
		if err := os.Rename(src, j.path(f.Entry.Path)); err != nil {
			return fmt.Errorf("put %s in place: %w", f.Entry.Path, err)
		}
	}
	if len(j.Patches) > 0 {
		if err := j.applyPatches(filepath.Join(stage, blobName)); err != nil {
			return err
		}
	}
	for _, l := range j.Links {
		p := j.path(l.Path)
		if cur, err := os.Readlink(p); err == nil && cur == l.Link {
			continue
		}
		if err := j.keep(l.Path); err != nil {
			return err
		}
		if err := os.Symlink(l.Link, p); err != nil {
			return err
		}
		os.Lchown(p, l.UID, l.GID)
	}
	for _, m := range j.Meta {
		setMeta(j.path(m.Path), m)
	}
	// Folders last and deepest first: filling them changed their times.
	dirs := append([]entry(nil), j.Dirs...)
	sort.Slice(dirs, func(a, b int) bool { return strings.Count(dirs[a].Path, "/") > strings.Count(dirs[b].Path, "/") })
	for _, d := range dirs {
		setMeta(j.path(d.Path), d)
	}
	return syncTree(j.AppDir)
}

// applyPatches writes each patch's blocks into its file; doing it again
// writes the same bytes.
func (j *journal) applyPatches(blobPath string) error {
	blob, err := os.Open(blobPath)
	if err != nil {
		return fmt.Errorf("the sync's staged blocks: %w", err)
	}
	defer blob.Close()
	buf := make([]byte, blockSize)
	for _, p := range j.Patches {
		path := j.path(p.Entry.Path)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("patch %s: %w", p.Entry.Path, err)
		}
		for _, b := range p.Blocks {
			if _, err := blob.ReadAt(buf[:b.N], b.At); err != nil {
				f.Close()
				return fmt.Errorf("patch %s: the staged block: %w", p.Entry.Path, err)
			}
			if _, err := f.WriteAt(buf[:b.N], int64(b.I)*blockSize); err != nil {
				f.Close()
				return fmt.Errorf("patch %s: %w", p.Entry.Path, err)
			}
		}
		if err := f.Truncate(p.Entry.Size); err != nil {
			f.Close()
			return fmt.Errorf("patch %s: %w", p.Entry.Path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("patch %s: %w", p.Entry.Path, err)
		}
		f.Close()
		setMeta(path, p.Entry)
	}
	return nil
}

func setMeta(p string, e entry) {
	os.Lchown(p, e.UID, e.GID)
	if e.Kind != "l" {
		os.Chmod(p, os.FileMode(e.Mode)&modeBits)
		t := time.Unix(0, e.MTime)
		os.Chtimes(p, t, t)
	}
}

// syncTree makes the renames in the data folder's file system durable.
func syncTree(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	// syncfs: every rename and folder of the volume, in one call.
	return unix.Syncfs(int(f.Fd()))
}

// modeBits are the mode bits a sync carries.
const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky
