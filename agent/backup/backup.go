// Package backup writes and reads the appliance's backup file: one file,
// encrypted with the operator's backup password (age, scrypt recipient),
// holding a tar stream of the configuration's sections, the application's
// data, and at its end a manifest (serial, versions, time, sections, the
// SHA-256 of every file) signed by the box's identity key.
//
// The manifest comes last so that a backup is written in one pass with
// flat memory, whatever the size of the app data; a restore stages every
// file while it hashes it, and only once the manifest's signature and
// every hash check out does anything on the box change (see Stage and
// package restore's journal in this package).
package backup

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"filippo.io/age"
)

// Format is the manifest's format version.
const Format = 1

// MinWorkFactor is the scrypt work factor (log2 N) of every backup: at
// least 18 as the issue asks, about a second on the box per attempt.
const MinWorkFactor = 18

// Kind says what a section is, which decides when it is written and
// restored.
type Kind string

// The kinds of section.
const (
	Config   Kind = "config"   // always written and restored
	Identity Kind = "identity" // the box's keys: written always, restored only when asked
	History  Kind = "history"  // written with include_history
	AppData  Kind = "app-data" // the application's data folder
)

// Section is one part of the backup: a file or a folder on the box.
type Section struct {
	Name string // "network", "users", …: unique, the tar folder
	Kind Kind
	Path string // a file or folder; absent is an empty section
	// Store names a subfolder (relative to Path) that is the guide's
	// file store: only files under StoreMaxFile and at most StoreMaxFiles
	// of them; the rest are listed as skipped.
	Store string
	// Skip names subfolders (relative to Path) left out, such as the app's
	// history without include_history.
	Skip []string
	// Discard is removed when the section is restored, before its
	// content goes in place (the app's data volume, which its folder
	// then fills anew).
	Discard []string
}

// The guide's limits on the file store.
const (
	StoreMaxFile  = 200 << 10
	StoreMaxFiles = 50
)

// App names the application a backup was taken with.
type App struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Manifest describes a backup; it is signed.
type Manifest struct {
	Format         int            `json:"format"`
	Serial         string         `json:"serial"`
	Base           string         `json:"base_version"`
	App            *App           `json:"app,omitempty"`
	Created        time.Time      `json:"created"`
	Reason         string         `json:"reason,omitempty"` // "manual", "before install of …", "daily"
	IncludeHistory bool           `json:"include_history"`
	Sections       []SectionFiles `json:"sections"`
	Skipped        []Skipped      `json:"skipped,omitempty"`
	// PublicKey is the ed25519 key that signed, base64: the box's
	// identity.
	PublicKey string `json:"public_key"`
}

// SectionFiles is one section in the manifest.
type SectionFiles struct {
	Name  string `json:"name"`
	Kind  Kind   `json:"kind"`
	Dir   bool   `json:"dir"` // Path was a folder
	Files []File `json:"files"`
}

// File is one entry of a section.
type File struct {
	Path   string `json:"path"` // slash-separated, relative to the section; "" for a file section
	Mode   uint32 `json:"mode"` // permission bits
	Dir    bool   `json:"dir,omitempty"`
	Link   string `json:"link,omitempty"` // a symlink's target
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256,omitempty"`
	UID    int    `json:"uid"`
	GID    int    `json:"gid"`
}

// Skipped is a file left out, with why.
type Skipped struct {
	Section string `json:"section"`
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	Reason  string `json:"reason"`
}

// The tar's layout.
const (
	sectionsDir   = "sections/"
	manifestName  = "manifest.json"
	signatureName = "manifest.sig"
)

// Options is how to write a backup.
type Options struct {
	Password       string
	WorkFactor     int // 0: MinWorkFactor
	Sections       []Section
	IncludeHistory bool
	Serial, Base   string
	App            *App
	Reason         string
	Key            ed25519.PrivateKey
	Now            time.Time
	// Progress is told the bytes of file content written so far and the
	// total planned, from time to time.
	Progress func(done, total int64)
}

// ErrNoPassword: no password, no backup.
var ErrNoPassword = errors.New("a backup needs a password: choose one (at least 8 characters) and keep it; without it the backup cannot be opened")

// entry is a planned tar entry.
type entry struct {
	section string
	abs     string
	file    File
}

// Write writes the backup to w and returns its manifest.
func Write(w io.Writer, o Options) (*Manifest, error) {
	if len(o.Password) < 8 {
		return nil, ErrNoPassword
	}
	if len(o.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("backup: the box has no identity key to sign with (is the data partition mounted?)")
	}
	wf := max(o.WorkFactor, MinWorkFactor)
	rcpt, err := age.NewScryptRecipient(o.Password)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	rcpt.SetWorkFactor(wf)
	m := &Manifest{Format: Format, Serial: o.Serial, Base: o.Base, App: o.App, Created: o.Now.UTC(), Reason: o.Reason,
		IncludeHistory: o.IncludeHistory, PublicKey: base64.StdEncoding.EncodeToString(o.Key.Public().(ed25519.PublicKey))}

	// Plan first (a walk, no reading), so progress has a total.
	var plan []entry
	var total int64
	for _, s := range o.Sections {
		if s.Kind == History && !o.IncludeHistory {
			continue
		}
		es, skipped, dir, err := walk(s)
		if err != nil {
			return nil, err
		}
		ms := SectionFiles{Name: s.Name, Kind: s.Kind, Dir: dir, Files: []File{}}
		m.Sections = append(m.Sections, ms)
		m.Skipped = append(m.Skipped, skipped...)
		for _, e := range es {
			total += e.file.Size
		}
		plan = append(plan, es...)
	}

	aw, err := age.Encrypt(w, rcpt)
	if err != nil {
		return nil, fmt.Errorf("backup: encrypt: %w", err)
	}
	tw := tar.NewWriter(aw)
	var done int64
	byName := map[string]int{}
	for i, s := range m.Sections {
		byName[s.Name] = i
	}
	buf := make([]byte, 256<<10)
	for _, e := range plan {
		f := e.file
		name := sectionsDir + e.section
		if f.Path != "" {
			name += "/" + f.Path
		}
		hdr := &tar.Header{Name: name, Mode: int64(f.Mode), Uid: f.UID, Gid: f.GID, ModTime: o.Now, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, f.Link
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, f.Size
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("backup: write %s: %w", name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			sum, err := copyFile(tw, e.abs, f.Size, buf, func(n int64) {
				done += n
				if o.Progress != nil {
					o.Progress(done, total)
				}
			})
			if err != nil {
				return nil, err
			}
			f.SHA256 = sum
		}
		i := byName[e.section]
		m.Sections[i].Files = append(m.Sections[i].Files, f)
	}
	mj, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(o.Key, mj)
	for _, f := range []struct {
		name string
		data []byte
	}{{manifestName, mj}, {signatureName, []byte(base64.StdEncoding.EncodeToString(sig))}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), ModTime: o.Now, Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := aw.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if o.Progress != nil {
		o.Progress(total, total)
	}
	return m, nil
}

// copyFile writes exactly size bytes of path (a file that changed size
// since the walk is padded or cut, and the hash says what was written).
func copyFile(w io.Writer, path string, size int64, buf []byte, progress func(int64)) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("backup: read %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	r := io.LimitReader(f, size)
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			if _, werr := w.Write(buf[:k]); werr != nil {
				return "", fmt.Errorf("backup: write: %w", werr)
			}
			n += int64(k)
			progress(int64(k))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("backup: read %s: %w", path, err)
		}
	}
	if pad := size - n; pad > 0 { // the file shrank while being read
		z := make([]byte, pad)
		h.Write(z)
		if _, err := w.Write(z); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// walk lists a section's entries, applying the file store's limits and
// the skipped folders.
func walk(s Section) ([]entry, []Skipped, bool, error) {
	st, err := os.Lstat(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, false, nil
	}
	if err != nil {
		return nil, nil, false, fmt.Errorf("backup: %s: %w", s.Name, err)
	}
	if !st.IsDir() {
		if !st.Mode().IsRegular() {
			return nil, nil, false, nil
		}
		return []entry{{section: s.Name, abs: s.Path, file: fileOf("", st, "")}}, nil, false, nil
	}
	var out []entry
	var skipped []Skipped
	storeFiles := 0
	err = filepath.WalkDir(s.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Path, p)
		rel = filepath.ToSlash(rel)
		if rel == "." {
			return nil
		}
		for _, sk := range s.Skip {
			if rel == sk || strings.HasPrefix(rel, sk+"/") {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
		}
		if strings.HasPrefix(rel, "lost+found") {
			return fs.SkipDir // the volume's own
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case info.IsDir(), info.Mode().IsRegular():
		default:
			return nil // sockets, fifos, devices: not data
		}
		if s.Store != "" && info.Mode().IsRegular() && strings.HasPrefix(rel, s.Store+"/") {
			switch {
			case info.Size() >= StoreMaxFile:
				skipped = append(skipped, Skipped{Section: s.Name, Path: rel, Size: info.Size(), Reason: "the file store keeps files under 200 KB in a backup"})
				return nil
			case storeFiles >= StoreMaxFiles:
				skipped = append(skipped, Skipped{Section: s.Name, Path: rel, Size: info.Size(), Reason: "the file store keeps at most 50 files in a backup"})
				return nil
			}
			storeFiles++
		}
		out = append(out, entry{section: s.Name, abs: p, file: fileOf(rel, info, link)})
		return nil
	})
	if err != nil {
		return nil, nil, true, fmt.Errorf("backup: %s: %w", s.Name, err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].file.Path < out[j].file.Path })
	return out, skipped, true, nil
}

func fileOf(rel string, info fs.FileInfo, link string) File {
	f := File{Path: rel, Mode: uint32(info.Mode().Perm()), Dir: info.IsDir(), Link: link}
	if info.Mode().IsRegular() {
		f.Size = info.Size()
	}
	f.UID, f.GID = owner(info)
	return f
}
