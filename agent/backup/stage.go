package backup

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"filippo.io/age"
)

// ErrRefused wraps every reason a backup file is refused before anything
// changed; the message says what to do.
var ErrRefused = errors.New("the backup was refused, nothing was changed")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Staged is a backup unpacked into a folder and checked: its manifest's
// signature holds and every file is the one the manifest names.
type Staged struct {
	Dir      string // the staging folder; sections/<name>/… inside
	Manifest *Manifest
	// ThisBox says the backup was signed by the identity key given to
	// Stage (the box restores its own backup).
	ThisBox bool
}

// SectionPath is where a section's staged content is.
func (s *Staged) SectionPath(name string) string {
	return filepath.Join(s.Dir, "sections", name)
}

const maxManifest = 16 << 20

// Stage decrypts r with password into dir (which must not exist), hashing
// every file as it is written, then checks the manifest's signature and
// every hash. On any failure dir is removed and the error says why in a
// sentence wrapping ErrRefused. own is this box's identity public key.
func Stage(r io.Reader, password, dir string, own ed25519.PublicKey) (*Staged, error) {
	st, err := stage(r, password, dir, own)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return st, nil
}

func stage(r io.Reader, password, dir string, own ed25519.PublicKey) (*Staged, error) {
	if password == "" {
		return nil, refuse("give the backup's password")
	}
	id, err := age.NewScryptIdentity(password)
	if err != nil {
		return nil, refuse("%v", err)
	}
	dec, err := age.Decrypt(r, id)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) {
			return nil, refuse("the password does not open this backup; check it (it is the one chosen when the backup was made)")
		}
		return nil, refuse("this is not a keel backup file (%v)", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("backup: staging folder: %w", err)
	}
	type got struct {
		size int64
		sum  string
		f    File
	}
	staged := map[string]got{} // "section/path" → what arrived
	links := map[string]bool{} // the symlinks among them
	var manifest, sig []byte
	tr := tar.NewReader(dec)
	buf := make([]byte, 256<<10)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, readErr(err)
		}
		switch h.Name {
		case manifestName, signatureName:
			b, err := io.ReadAll(io.LimitReader(tr, maxManifest))
			if err != nil {
				return nil, readErr(err)
			}
			if h.Name == manifestName {
				manifest = b
			} else {
				sig = b
			}
			continue
		}
		name := strings.TrimSuffix(h.Name, "/")
		rel, ok := strings.CutPrefix(name, strings.TrimSuffix(sectionsDir, "/")+"/")
		if !ok || rel == "" || path.Clean(rel) != rel || strings.HasPrefix(rel, "../") || path.IsAbs(rel) {
			return nil, refuse("the file holds an entry %q outside its sections; it is not a keel backup", h.Name)
		}
		// Nothing is written through a symlink the file itself made: the
		// signature is only checked at the end, so until then every entry
		// is an attacker's to choose.
		for l := range links {
			if strings.HasPrefix(rel, l+"/") {
				return nil, refuse("the entry %q lies under a symbolic link of the same file; it is not a keel backup", h.Name)
			}
		}
		if _, dup := staged[rel]; dup {
			return nil, refuse("the entry %q comes twice; it is not a keel backup", h.Name)
		}
		target := filepath.Join(dir, "sections", filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			return nil, err
		}
		f := File{Mode: uint32(h.Mode) & 0o7777, UID: h.Uid, GID: h.Gid}
		switch h.Typeflag {
		case tar.TypeDir:
			f.Dir = true
			if err := os.Mkdir(target, 0o700); err != nil && !os.IsExist(err) {
				return nil, err
			}
		case tar.TypeSymlink:
			f.Link = h.Linkname
			if err := os.Symlink(h.Linkname, target); err != nil {
				return nil, err
			}
			links[rel] = true
		case tar.TypeReg:
			sum, n, err := writeHashed(target, tr, buf)
			if err != nil {
				return nil, err
			}
			f.Size, f.SHA256 = n, sum
		default:
			return nil, refuse("the entry %q is of a kind backups do not hold", h.Name)
		}
		staged[rel] = got{size: f.Size, sum: f.SHA256, f: f}
	}
	if manifest == nil || sig == nil {
		return nil, refuse("the file ends before its manifest: it was cut short; download it again")
	}
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, refuse("the manifest cannot be read (%v)", err)
	}
	if m.Format != Format {
		return nil, refuse("the backup's format %d is not %d: it comes from another version of the appliance software", m.Format, Format)
	}
	pub, err := base64.StdEncoding.DecodeString(m.PublicKey)
	sigBytes, serr := base64.StdEncoding.DecodeString(string(sig))
	if err != nil || serr != nil || len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, manifest, sigBytes) {
		return nil, refuse("the manifest's signature does not hold: the file was changed after the appliance wrote it")
	}
	seen := 0
	for _, s := range m.Sections {
		for _, f := range s.Files {
			key := s.Name
			if f.Path != "" {
				key += "/" + f.Path
			}
			g, ok := staged[key]
			switch {
			case !ok:
				return nil, refuse("%s is in the manifest but not in the file", key)
			case f.Dir != g.f.Dir || f.Link != g.f.Link || f.Size != g.size || f.SHA256 != g.sum:
				return nil, refuse("%s is not the file the manifest names (its hash differs): the backup is damaged", key)
			}
			// Restore the owner and mode the manifest gives.
			p := filepath.Join(dir, "sections", filepath.FromSlash(key))
			os.Lchown(p, f.UID, f.GID)
			if f.Link == "" {
				os.Chmod(p, os.FileMode(f.Mode).Perm())
			}
			seen++
		}
	}
	if seen != len(staged) {
		return nil, refuse("the file holds entries its manifest does not name: it is damaged or not a keel backup")
	}
	return &Staged{Dir: dir, Manifest: &m, ThisBox: bytes.Equal(pub, own)}, nil
}

// readErr turns a failure inside the encrypted stream into a sentence:
// age authenticates every 64 KiB chunk and the end of the stream.
func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "last chunk") || strings.Contains(err.Error(), "unexpected EOF") {
		return refuse("the file is cut short; download it again")
	}
	return refuse("the file is damaged or cut short (%v); download it again", err)
}

func writeHashed(path string, r io.Reader, buf []byte) (string, int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), r, buf)
	if err != nil {
		f.Close()
		return "", 0, readErr(err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", 0, err
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
