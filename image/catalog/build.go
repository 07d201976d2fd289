package catalog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"keel.dev/keel/image/kpkg"
)

// Target limits who is offered a package; it is a value of targets.json,
// whose keys are "name@version" ("demo@2.0.1").
type Target struct {
	Channels []string `json:"channels,omitempty"`
	Serials  []string `json:"serials,omitempty"`
}

// Build scans dir/packages/*.kpkg, reads each package as a box would
// (signature by key's public half, payload hash), hashes the whole file,
// applies dir/targets.json when it exists, and writes dir/catalog.json and
// dir/catalog.sig, each by a rename, so neither is ever a partial file. A
// client that fetches the two between the renames sees a signature that
// does not match and fetches again. It returns the catalog it wrote.
func Build(dir string, key ed25519.PrivateKey, generated time.Time) (*Catalog, error) {
	return BuildWith(dir, key, BuildOptions{Generated: generated})
}

// BuildOptions are the catalog's own fields.
type BuildOptions struct {
	Generated time.Time
	// Version, 0 for Generated in Unix seconds: later builds get higher
	// versions without anyone keeping count.
	Version uint64
	// Lifetime, 0 for DefaultLifetime: Expires is Generated plus this.
	Lifetime time.Duration
}

// BuildWith is Build with the catalog's version and lifetime chosen.
func BuildWith(dir string, key ed25519.PrivateKey, o BuildOptions) (*Catalog, error) {
	generated := o.Generated
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("catalog: the signing key has %d bytes, not %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	files, err := filepath.Glob(filepath.Join(dir, PackagesDir, "*.kpkg"))
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("catalog: there are no packages in %s: put the release's .kpkg files there (`image package` or `image release` make them)",
			filepath.Join(dir, PackagesDir))
	}
	sort.Strings(files)
	c := &Catalog{Format: FormatVersion, Generated: generated.UTC().Truncate(time.Second), Version: o.Version}
	if c.Version == 0 {
		if generated.Unix() <= 0 {
			return nil, fmt.Errorf("catalog: generated at %s, before 1970: give it a version", generated)
		}
		c.Version = uint64(generated.Unix())
	}
	lifetime := o.Lifetime
	if lifetime == 0 {
		lifetime = DefaultLifetime
	}
	if lifetime < 0 {
		return nil, fmt.Errorf("catalog: lifetime %v is negative", lifetime)
	}
	c.Expires = c.Generated.Add(lifetime)
	where := map[string]string{} // entry → file, to name both files of a duplicate
	for _, f := range files {
		e, err := readEntry(f, pub)
		if err != nil {
			return nil, fmt.Errorf("catalog: %w", err)
		}
		e.File = path.Join(PackagesDir, filepath.Base(f))
		if other, ok := where[e.String()]; ok {
			return nil, fmt.Errorf("catalog: %s and %s are both %s: remove one", other, e.File, e)
		}
		where[e.String()] = e.File
		c.Entries = append(c.Entries, e)
	}
	if err := applyTargets(c, filepath.Join(dir, TargetsFile)); err != nil {
		return nil, err
	}
	sort.SliceStable(c.Entries, func(i, j int) bool { return entryLess(&c.Entries[i], &c.Entries[j]) })
	cj, sig, err := Sign(c, key)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, JSONFile), cj); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, SigFile), sig); err != nil {
		return nil, err
	}
	return c, nil
}

// readEntry opens a package as a box would, payload included, hashing the
// file as it passes.
func readEntry(file string, pub ed25519.PublicKey) (Entry, error) {
	f, err := os.Open(file)
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	h := sha256.New()
	p, err := kpkg.Open(io.TeeReader(f, h), []ed25519.PublicKey{pub})
	if err == nil {
		_, err = io.Copy(io.Discard, p.Payload())
	}
	if err != nil {
		if errors.Is(err, kpkg.ErrUnknownKey) {
			return Entry{}, fmt.Errorf("%s: %w: sign it with the release's key %s", file, err, kpkg.KeyID(pub))
		}
		return Entry{}, fmt.Errorf("%s: %w: rebuild it", file, err)
	}
	if n, err := io.Copy(io.Discard, f); err != nil {
		return Entry{}, fmt.Errorf("%s: %w", file, err)
	} else if n > 0 {
		return Entry{}, fmt.Errorf("%s has %d bytes after the end of the package: rebuild it", file, n)
	}
	// f is at its end, and every byte before it went through the hash:
	// its offset is the size hashed.
	size, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return Entry{}, fmt.Errorf("%s: %w", file, err)
	}
	m := p.Manifest
	return Entry{
		Kind: m.Kind, Name: m.Name, Version: m.Version, Requires: m.Requires, Wait: m.Wait,
		Hardware: m.Hardware, Notes: m.Notes,
		Size: size, SHA256: hex.EncodeToString(h.Sum(nil)),
	}, nil
}

// applyTargets reads targets.json, if any, into the entries it names. A
// target that names no package is an error: a misspelt name would leave
// the package it meant open to every appliance.
func applyTargets(c *Catalog, file string) error {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var targets map[string]Target
	if err := d.Decode(&targets); err != nil {
		return fmt.Errorf("catalog: %s is not a JSON object of \"name@version\": {\"channels\": [...], \"serials\": [...]}: %v", file, err)
	}
	for id, t := range targets {
		name, version, ok := strings.Cut(id, "@")
		v, err := kpkg.ParseVersion(version)
		if !ok || err != nil {
			return fmt.Errorf("catalog: %s: %q is not \"name@version\", such as \"demo@2.0.1\"", file, id)
		}
		found := false
		for i := range c.Entries {
			if e := &c.Entries[i]; e.Name == name && e.Version.Compare(v) == 0 {
				e.Channels, e.Serials, found = t.Channels, t.Serials, true
			}
		}
		if !found {
			return fmt.Errorf("catalog: %s names %s, but no package in %s is %s: correct the name or remove it (a misspelt target leaves the package it meant open to every appliance)",
				file, id, PackagesDir, id)
		}
	}
	return nil
}

// writeFile replaces path by a rename of a synced temporary file.
func writeFile(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+"-*.tmp")
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		return fmt.Errorf("catalog: writing %s: %w", name, err)
	}
	return nil
}
