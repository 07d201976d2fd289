package backup

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/agent/install"
)

// Service makes backups and restores them on this box. Fill in the
// fields before use.
type Service struct {
	// Sections are this box's sections, where each lives; a restore puts
	// a backup's section where this box's of the same name is.
	Sections func(includeHistory bool) []Section
	Key      ed25519.PrivateKey // the identity key that signs
	// Meta is what the manifest says of the box.
	Meta func() (serial, base string, app *App)
	Jobs *install.Jobs
	// StageDir is where a restore is staged (it owns it); Dir holds the
	// settings and the automatic backups.
	StageDir, Dir string
	// Adjust fits a staged backup to this box before a restore (the
	// network configuration's interfaces to this box's links) and says
	// what it did, as sentences; it may set the journal's Network.
	Adjust func(st *Staged, j *Journal) ([]string, error)
	// Restart reboots the box to apply a staged restore.
	Restart func() error
	// Compatible refuses a backup this box cannot take (from a newer base
	// or application), naming both versions. Optional.
	Compatible func(m *Manifest) error
	Log        *slog.Logger
	Now        func() time.Time

	mu      sync.Mutex // one backup or restore at a time
	running bool
}

// ErrNoAutoPassword: backups kept on the box need their password set.
var ErrNoAutoPassword = errors.New("no backup kept on the appliance: set the automatic backups' password on the Backup page first")

// ErrBusy: a backup or restore is already running.
var ErrBusy = errors.New("a backup or a restore is running; wait until its job is done (GET /api/v1/jobs)")

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Service) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return ErrBusy
	}
	s.running = true
	return nil
}

func (s *Service) end() {
	s.mu.Lock()
	s.running = false
	s.mu.Unlock()
}

// Backup writes a backup to w, as a job.
func (s *Service) Backup(w io.Writer, password string, includeHistory bool, reason string) (*Manifest, error) {
	if len(password) < 8 {
		return nil, ErrNoPassword
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	var job *install.Job
	if s.Jobs != nil {
		job = s.Jobs.Begin("backup", "writing a backup ("+reason+")")
	}
	serial, base, app := s.Meta()
	m, err := Write(w, Options{
		Password: password, Sections: s.Sections(includeHistory), IncludeHistory: includeHistory,
		Serial: serial, Base: base, App: app, Reason: reason, Key: s.Key, Now: s.now(),
		Progress: func(done, total int64) {
			if job != nil && total > 0 {
				job.Progress(float64(done) / float64(total))
			}
		},
	})
	if job != nil {
		msg := ""
		if m != nil {
			msg = fmt.Sprintf("the backup was written: %d sections", len(m.Sections))
			if len(m.Skipped) > 0 {
				msg += fmt.Sprintf(", %d files of the file store skipped", len(m.Skipped))
			}
		}
		job.End(err, msg)
	}
	return m, err
}

// Plan is what a restore would change, for its dry run and its answer.
type Plan struct {
	Manifest *Manifest `json:"manifest"`
	ThisBox  bool      `json:"this_box"` // the backup was made by this appliance
	Changes  []Change  `json:"changes"`
	// Notes are what fitting the backup to this box did or could not do
	// (interfaces placed by name or MAC, or not placed), as sentences.
	Notes []string `json:"notes"`
	// NetworkConfirmToken, after a restore that changes the network:
	// POST it to /api/v1/network/confirm once the appliance is back, or
	// the network configuration from before the restore returns.
	NetworkConfirmToken string `json:"network_confirm_token,omitempty"`
}

// Change is what happens to one section.
type Change struct {
	Section string `json:"section"`
	Kind    Kind   `json:"kind"`
	What    string `json:"what"` // "changed", "unchanged", "added", "kept" (identity not carried), "not in the backup", "skipped"
	Files   int    `json:"files"`
	Bytes   int64  `json:"bytes"`
}

// RestoreOptions is how to restore.
type RestoreOptions struct {
	Password      string
	DryRun        bool
	CarryIdentity bool // take the backup's identity keys instead of keeping this box's
	// Compatible refuses a backup this box cannot take (from a newer base
	// or application), naming both versions.
	Compatible func(m *Manifest) error
}

// Restore reads a backup from r, checks it whole, and stages it to be
// put in place at the next boot; the caller then restarts the box (or,
// for a dry run, nothing changes). It answers what changes.
func (s *Service) Restore(ctx context.Context, r io.Reader, o RestoreOptions) (*Plan, error) {
	if err := s.begin(); err != nil {
		return nil, err
	}
	defer s.end()
	var job *install.Job
	if s.Jobs != nil {
		job = s.Jobs.Begin("restore", "reading the backup")
	}
	plan, err := s.restore(r, o)
	if job != nil {
		msg := "the backup was checked; nothing was changed (dry run)"
		if !o.DryRun {
			msg = "the backup was checked and staged; the appliance restarts to put it in place"
		}
		job.End(err, msg)
	}
	return plan, err
}

func (s *Service) restore(r io.Reader, o RestoreOptions) (*Plan, error) {
	if j, _ := LoadJournal(s.StageDir); j != nil && j.State == StateStaged {
		return nil, refuse("a restore is staged already and waits for the restart that puts it in place; restart the appliance first")
	}
	os.RemoveAll(s.StageDir) // a dry run's, or a restore already applied
	var own ed25519.PublicKey
	if len(s.Key) == ed25519.PrivateKeySize {
		own = s.Key.Public().(ed25519.PublicKey)
	}
	st, err := Stage(r, o.Password, s.StageDir, own)
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(s.StageDir)
		}
	}()
	if o.Compatible != nil {
		if err := o.Compatible(st.Manifest); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRefused, err)
		}
	}
	plan := &Plan{Manifest: st.Manifest, ThisBox: st.ThisBox, Changes: []Change{}, Notes: []string{}}
	j := &Journal{State: StateStaged}
	if s.Adjust != nil {
		notes, err := s.Adjust(st, j)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRefused, err)
		}
		plan.Notes = append(plan.Notes, notes...)
	}
	here := map[string]Section{}
	for _, sec := range s.Sections(true) {
		here[sec.Name] = sec
	}
	for _, sec := range st.Manifest.Sections {
		c := Change{Section: sec.Name, Kind: sec.Kind}
		for _, f := range sec.Files {
			if !f.Dir {
				c.Files++
				c.Bytes += f.Size
			}
		}
		local, ok := here[sec.Name]
		switch {
		case !ok:
			c.What = "skipped"
			plan.Notes = append(plan.Notes, "the backup's section "+sec.Name+" has no place on this appliance's software; it is left out")
		case sec.Kind == Identity && !o.CarryIdentity:
			c.What = "kept"
			plan.Notes = append(plan.Notes, "this appliance keeps its own identity keys and certificate (restore with carry_identity to take the backup's)")
		case len(sec.Files) == 0:
			// Empty on the box that made it (never configured): this
			// box's own stays.
			c.What = "not in the backup"
		default:
			if err := keepSkipped(st, local, here); err != nil {
				return nil, err
			}
			c.What = compare(sec, local)
			if c.What != "unchanged" {
				j.Targets = append(j.Targets, Target{Section: sec.Name, Path: local.Path, Discard: local.Discard})
			}
		}
		plan.Changes = append(plan.Changes, c)
	}
	if j.Network != nil {
		plan.NetworkConfirmToken = j.Network.Token
	}
	if o.DryRun {
		return plan, nil
	}
	for _, c := range plan.Changes {
		j.Summary = append(j.Summary, fmt.Sprintf("%s: %s", c.Section, c.What))
	}
	if err := j.Save(s.StageDir); err != nil {
		return nil, err
	}
	keep = true
	return plan, nil
}

// keepSkipped copies into a staged folder section what its backup left
// out (the app's history, in a backup without it) from the box, so the
// restore that replaces the folder does not lose it.
func keepSkipped(st *Staged, local Section, here map[string]Section) error {
	inBackup := map[string]bool{}
	for _, sec := range st.Manifest.Sections {
		if l, ok := here[sec.Name]; ok {
			inBackup[l.Path] = true
		}
	}
	for _, sk := range local.Skip {
		live := filepath.Join(local.Path, filepath.FromSlash(sk))
		staged := filepath.Join(st.SectionPath(local.Name), filepath.FromSlash(sk))
		if inBackup[live] {
			continue // the backup has it: its own section restores it
		}
		if _, err := os.Lstat(live); err != nil {
			continue
		}
		if _, err := os.Lstat(staged); err == nil {
			continue
		}
		if err := copyTree(live, staged); err != nil {
			return fmt.Errorf("keep %s from this appliance: %w", live, err)
		}
	}
	return nil
}

// copyTree copies a folder with its modes, owners and links.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		uid, gid := owner(info)
		switch {
		case d.IsDir():
			if err := os.MkdirAll(to, info.Mode().Perm()); err != nil {
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(l, to); err != nil {
				return err
			}
		case d.Type().IsRegular():
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
			if err != nil {
				in.Close()
				return err
			}
			_, err = io.Copy(out, in)
			in.Close()
			if err == nil {
				err = out.Sync()
			}
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return nil
		}
		os.Lchown(to, uid, gid)
		return nil
	})
}

// compare says whether the box's copy of a section differs from the
// backup's, from the manifest: staging hashed every file as it arrived,
// so the staged side is not read again, and the box's side is read only
// when names, kinds and sizes all match. The local section's skipped
// folders (the history, a section of its own) are left out.
func compare(sec SectionFiles, local Section) string {
	st, err := os.Lstat(local.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "added"
	case err != nil:
		return "changed"
	case !sec.Dir:
		if len(sec.Files) != 1 || !st.Mode().IsRegular() || st.Size() != sec.Files[0].Size {
			return "changed"
		}
		if sum, err := fileSum(local.Path); err != nil || sum != sec.Files[0].SHA256 {
			return "changed"
		}
		return "unchanged"
	case !st.IsDir():
		return "changed"
	}
	want := map[string]File{}
	for _, f := range sec.Files {
		want[f.Path] = f
	}
	var hash []string
	seen := 0
	differs := errors.New("differs")
	err = filepath.WalkDir(local.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(local.Path, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		for _, sk := range append(local.Skip, "lost+found") {
			if rel == sk || strings.HasPrefix(rel, sk+"/") {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
		}
		f, ok := want[rel]
		if !ok {
			return differs
		}
		seen++
		switch {
		case d.IsDir():
			if !f.Dir {
				return differs
			}
		case d.Type()&fs.ModeSymlink != 0:
			if l, _ := os.Readlink(p); l != f.Link || f.Link == "" {
				return differs
			}
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil || f.Dir || f.Link != "" || info.Size() != f.Size {
				return differs
			}
			hash = append(hash, rel)
		default:
			return differs
		}
		return nil
	})
	if err != nil || seen != len(want) {
		return "changed"
	}
	for _, rel := range hash {
		if sum, err := fileSum(filepath.Join(local.Path, filepath.FromSlash(rel))); err != nil || sum != want[rel].SHA256 {
			return "changed"
		}
	}
	return "unchanged"
}

func fileSum(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// NewToken is a confirmation token.
func NewToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Settings are the automatic backups' settings.
type Settings struct {
	// Password encrypts the automatic backups; without one there are
	// none. It is never shown again (GET answers password_set).
	Password       string `json:"password,omitempty"`
	PasswordSet    bool   `json:"password_set"`
	Keep           int    `json:"keep"`  // automatic backups kept, 1..20 (default 3)
	Daily          bool   `json:"daily"` // one a day as well as before every install
	IncludeHistory bool   `json:"include_history"`
}

const settingsFile = "settings.json"

// DefaultSettings: keep 3, daily on, no password yet.
func DefaultSettings() Settings { return Settings{Keep: 3, Daily: true} }

// LoadSettings reads the settings (with the password).
func (s *Service) LoadSettings() Settings {
	st := DefaultSettings()
	if b, err := os.ReadFile(filepath.Join(s.Dir, settingsFile)); err == nil {
		json.Unmarshal(b, &st)
	}
	st.PasswordSet = st.Password != ""
	return st
}

// SaveSettings checks and saves settings; an empty password keeps the one
// set before.
func (s *Service) SaveSettings(in Settings) (Settings, error) {
	cur := s.LoadSettings()
	if in.Keep == 0 {
		in.Keep = 3
	}
	if in.Keep < 1 || in.Keep > 20 {
		return cur, fmt.Errorf("keep: use 1 to 20")
	}
	switch {
	case in.Password == "":
		in.Password = cur.Password
	case len(in.Password) < 8:
		return cur, fmt.Errorf("password: use at least 8 characters")
	}
	in.PasswordSet = in.Password != ""
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return cur, err
	}
	b, _ := json.MarshalIndent(in, "", "  ")
	if err := atomicfile.Write(filepath.Join(s.Dir, settingsFile), append(b, '\n'), 0o600); err != nil {
		return cur, err
	}
	return in, nil
}

// Stored is an automatic backup kept on the box.
type Stored struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Reason  string    `json:"reason"`
	Base    string    `json:"base_version"`
	App     *App      `json:"app,omitempty"`
	Size    int64     `json:"size"`
}

func (s *Service) autoDir() string { return filepath.Join(s.Dir, "auto") }

// Auto writes an automatic backup for reason (kept on the box, the oldest
// beyond Keep removed); without a password it writes none and says so.
func (s *Service) Auto(reason string) (*Stored, error) {
	set := s.LoadSettings()
	if set.Password == "" {
		return nil, ErrNoAutoPassword
	}
	dir := s.autoDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := s.now().UTC()
	name := now.Format("20060102-150405.000000") + ".age"
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	m, err := s.Backup(f, set.Password, set.IncludeHistory, reason)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return nil, err
	}
	st, _ := os.Stat(tmp)
	info := Stored{Name: name, Created: m.Created, Reason: reason, Base: m.Base, App: m.App, Size: st.Size()}
	b, _ := json.Marshal(info)
	if err := atomicfile.Write(filepath.Join(dir, name+".json"), b, 0o600); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return nil, err
	}
	atomicfile.SyncDir(dir)
	list := s.List()
	for i := set.Keep; i < len(list); i++ {
		os.Remove(filepath.Join(dir, list[i].Name))
		os.Remove(filepath.Join(dir, list[i].Name+".json"))
	}
	return &info, nil
}

// List is the automatic backups, newest first.
func (s *Service) List() []Stored {
	es, _ := os.ReadDir(s.autoDir())
	out := []Stored{}
	for _, e := range es {
		if !strings.HasSuffix(e.Name(), ".age.json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.autoDir(), e.Name()))
		var st Stored
		if err != nil || json.Unmarshal(b, &st) != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.autoDir(), st.Name)); err != nil {
			continue
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// Open opens a kept automatic backup by name.
func (s *Service) Open(name string) (*os.File, error) {
	for _, st := range s.List() {
		if st.Name == name {
			return os.Open(filepath.Join(s.autoDir(), name))
		}
	}
	return nil, fs.ErrNotExist
}

// BeforeInstall is install.Installer's BeforeInstall: an automatic backup
// before every install.
func (s *Service) BeforeInstall(ctx context.Context, what string) string {
	st, err := s.Auto("before the install of " + what)
	if err != nil {
		s.log().Warn("no backup before the install", "install", what, "err", err)
		return err.Error()
	}
	return "an automatic backup was taken first (" + st.Name + ")"
}

// Daily runs an automatic backup a day while ctx lives, when the
// settings ask for it.
func (s *Service) Daily(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		set := s.LoadSettings()
		if set.Daily && set.Password != "" {
			list := s.List()
			last := time.Time{}
			for _, st := range list {
				if strings.HasPrefix(st.Reason, "daily") && st.Created.After(last) {
					last = st.Created
				}
			}
			if s.now().Sub(last) >= 24*time.Hour {
				if _, err := s.Auto("daily"); err != nil {
					s.log().Warn("daily backup failed", "err", err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
