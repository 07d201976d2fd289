// Package catalog is keel's signed release catalog: the list of packages
// a release folder offers, which appliances each is for, and the rules
// that say, for one appliance, which updates it sees, which it can install
// now and in what order it installs them. The vendor's tools build it
// (Build); the update server and the appliance read it (Verify) and
// evaluate it with the same code (Updates, Plan). The package has no side
// effects besides Build, which writes the files it is asked to.
//
// # Release folder
//
//	catalog.json   the catalog (JSON); its exact bytes are signed. It has a
//	               version that goes up with every catalog and an expiry.
//	catalog.sig    {"key_id":"<16 hex>","ed25519":"<base64>"} and a newline
//	packages/      the .kpkg files the catalog names
//	targets.json   optional: channels and serials per "name@version"
//
// catalog.sig has the form kpkg uses for manifest.sig: an ed25519
// signature by the vendor's key over the exact bytes of catalog.json, and
// the id of that key (kpkg.KeyID). Each entry repeats what the package's
// own signed manifest says (kind, name, version, requirements, wait,
// hardware, notes) and adds the file's path, size and SHA-256, and its
// targets: Channels (empty: every channel) and Serials (empty: every
// appliance; a staged rollout lists serials). The package stays signed on
// its own: a box verifies it again when it installs it.
//
// # Requirements and steps
//
// An entry's requirements are its manifest's, plus one the catalog
// implies: a version that requires an earlier version of its own kind
// ("app >= 1.1.0" in app 2.0.0) carries a migration from that version, so
// it is a step every later version of the same name goes through; later
// versions require it ("app >= 2.0.0" for app 2.0.1). A version that
// requires nothing of its own kind (a patch, 1.0.1) can be skipped.
package catalog

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode"

	"keel.dev/keel/image/kpkg"
)

// FormatVersion is the catalog format Build writes and Verify accepts.
const FormatVersion = 1

// MaxSize bounds catalog.json; a reader refuses a larger one before
// parsing it. Release notes are what makes a catalog large.
const MaxSize = 4 << 20

// Names of the files in a release folder.
const (
	JSONFile    = "catalog.json"
	SigFile     = "catalog.sig"
	TargetsFile = "targets.json"
	PackagesDir = "packages"
)

// DefaultLifetime is how long a catalog Build signs stays fresh. A box
// that holds an expired catalog shows it as stale: an update server (or
// someone between) that keeps serving an old signed catalog to hide newer
// releases is noticed (TUF's freeze attack).
const DefaultLifetime = 30 * 24 * time.Hour

// Catalog is the content of catalog.json.
type Catalog struct {
	Format int `json:"format"`
	// Version only goes up from one signed catalog to the next; a box
	// refuses one older than the catalog it holds (TUF's rollback attack:
	// replaying an old catalog that still lists a withdrawn build).
	Version   uint64    `json:"version"`
	Generated time.Time `json:"generated"`
	// Expires is when the catalog stops being fresh.
	Expires time.Time `json:"expires"`
	Entries []Entry   `json:"entries"`
}

// Expired says whether the catalog is past its expiry at now.
func (c *Catalog) Expired(now time.Time) bool { return !now.Before(c.Expires) }

// Entry is one package of the release.
type Entry struct {
	Kind     kpkg.Kind          `json:"kind"`
	Name     string             `json:"name"`
	Version  kpkg.Version       `json:"version"`
	Requires []kpkg.Requirement `json:"requires,omitempty"`
	Wait     kpkg.Duration      `json:"wait,omitempty"`
	Hardware []string           `json:"hardware,omitempty"`
	Notes    string             `json:"notes,omitempty"`
	// File is the package's path in the release folder, with slashes:
	// "packages/demo-app-1.1.0.kpkg".
	File string `json:"file"`
	// Size and SHA256 (lower-case hex) are those of the whole .kpkg file.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Channels the entry is offered on; empty means every channel.
	Channels []string `json:"channels,omitempty"`
	// Serials of the appliances the entry is offered to; empty means every
	// appliance.
	Serials []string `json:"serials,omitempty"`
}

// String names the entry as operators read it: "app demo 1.1.0".
func (e Entry) String() string { return fmt.Sprintf("%s %s %s", e.Kind, e.Name, e.Version) }

// signature is the content of catalog.sig, in kpkg's manifest.sig form.
type signature struct {
	KeyID   string `json:"key_id"`
	Ed25519 []byte `json:"ed25519"` // base64 in JSON
}

// Marshal encodes the catalog as Build writes it: indented, without HTML
// escaping, with a final newline, after checking it.
func (c *Catalog) Marshal() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if err := e.Encode(c); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if b.Len() > MaxSize {
		return nil, fmt.Errorf("catalog: %d bytes, more than the %d a reader accepts (shorten the release notes)", b.Len(), MaxSize)
	}
	return b.Bytes(), nil
}

// Sign encodes the catalog (setting Format when it is 0) and signs it:
// the bytes of catalog.json and catalog.sig.
func Sign(c *Catalog, key ed25519.PrivateKey) (catalogJSON, sig []byte, err error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, nil, fmt.Errorf("catalog: the signing key has %d bytes, not %d", len(key), ed25519.PrivateKeySize)
	}
	if c.Format == 0 {
		c.Format = FormatVersion
	}
	catalogJSON, err = c.Marshal()
	if err != nil {
		return nil, nil, err
	}
	s, err := json.Marshal(signature{KeyID: kpkg.KeyID(key.Public().(ed25519.PublicKey)), Ed25519: ed25519.Sign(key, catalogJSON)})
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: %w", err)
	}
	return catalogJSON, append(s, '\n'), nil
}

// Verify checks catalog.sig over the exact bytes of catalog.json with the
// trusted key it names, and only then decodes and checks the catalog.
// Errors wrap kpkg.ErrUnknownKey and kpkg.ErrSignature where they apply.
// Nothing here reads the clock.
func Verify(catalogJSON, sig []byte, trusted []ed25519.PublicKey) (*Catalog, error) {
	var s signature
	if err := json.Unmarshal(sig, &s); err != nil {
		return nil, fmt.Errorf("catalog.sig is not a signature (%v): fetch it again, or rebuild the release", err)
	}
	if canon, err := json.Marshal(s); err != nil || !bytes.Equal(append(canon, '\n'), sig) {
		return nil, fmt.Errorf("catalog.sig is not in the form keel writes: fetch it again, or rebuild the release")
	}
	if _, err := hex.DecodeString(s.KeyID); err != nil || len(s.KeyID) != 16 || len(s.Ed25519) != ed25519.SignatureSize {
		return nil, fmt.Errorf("catalog.sig does not hold a key id and an ed25519 signature: fetch it again, or rebuild the release")
	}
	var pub ed25519.PublicKey
	var ids []string
	for _, k := range trusted {
		if len(k) != ed25519.PublicKeySize {
			continue
		}
		ids = append(ids, kpkg.KeyID(k))
		if kpkg.KeyID(k) == s.KeyID {
			pub = k
		}
	}
	if pub == nil {
		return nil, fmt.Errorf("the catalog is %w %s; the trusted keys are %s: sign the release with one of them",
			kpkg.ErrUnknownKey, s.KeyID, orNone(strings.Join(ids, ", ")))
	}
	if !ed25519.Verify(pub, catalogJSON, s.Ed25519) {
		return nil, fmt.Errorf("the catalog's %w with key %s: catalog.json or catalog.sig changed after signing; fetch both again, or rebuild the release",
			kpkg.ErrSignature, s.KeyID)
	}
	c, err := parse(catalogJSON)
	if err != nil {
		return nil, fmt.Errorf("the catalog is signed but invalid: %v; rebuild the release with a current `image release`", err)
	}
	return c, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// parse decodes catalog bytes strictly: unknown fields are refused, as a
// field this reader ignores could be one a newer vendor tool relies on.
func parse(b []byte) (*Catalog, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("catalog.json has %d bytes, more than the %d allowed", len(b), MaxSize)
	}
	var probe struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, err
	}
	if probe.Format > FormatVersion {
		return nil, fmt.Errorf("format %d is newer than this reader understands (%d): update the base first", probe.Format, FormatVersion)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var c Catalog
	if err := d.Decode(&c); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("data follows the JSON object")
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// validate checks what a reader relies on: the fields a manifest would
// have are checked by the manifest's own rules.
func (c *Catalog) validate() error {
	if c.Format != FormatVersion {
		return fmt.Errorf("format %d is not %d", c.Format, FormatVersion)
	}
	if c.Version == 0 {
		return fmt.Errorf("the catalog has no version (it must be 1 or more and go up with every catalog)")
	}
	if !c.Expires.After(c.Generated) {
		return fmt.Errorf("the catalog expires (%s) before it was generated (%s)", c.Expires.Format(time.RFC3339), c.Generated.Format(time.RFC3339))
	}
	seen := map[string]bool{}
	for _, e := range c.Entries {
		if err := e.validate(); err != nil {
			return fmt.Errorf("entry %s (%s): %w", e, e.File, err)
		}
		id := e.String()
		if seen[id] {
			return fmt.Errorf("%s is listed twice", id)
		}
		seen[id] = true
	}
	return nil
}

func (e *Entry) validate() error {
	if e.Size <= 0 {
		return fmt.Errorf("size %d is not positive", e.Size)
	}
	if _, err := hex.DecodeString(e.SHA256); err != nil || len(e.SHA256) != 64 || strings.ToLower(e.SHA256) != e.SHA256 {
		return fmt.Errorf("sha256 %q is not 64 lower-case hex digits", e.SHA256)
	}
	if !fs.ValidPath(e.File) || e.File == "." || !strings.HasSuffix(e.File, ".kpkg") {
		return fmt.Errorf("file %q is not a path to a .kpkg inside the release folder", e.File)
	}
	m := kpkg.Manifest{
		Format: kpkg.FormatVersion, Kind: e.Kind, Name: e.Name, Version: e.Version,
		Payload:  kpkg.Payload{Size: e.Size, SHA256: e.SHA256},
		Hardware: e.Hardware, Requires: e.Requires, Wait: e.Wait, Notes: e.Notes,
	}
	if err := m.Validate(); err != nil {
		return err
	}
	for _, l := range [][]string{e.Channels, e.Serials} {
		for _, s := range l {
			if s == "" || len(s) > 128 || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0 {
				return fmt.Errorf("channel or serial %q is empty, too long, or has spaces or unprintable characters", s)
			}
		}
	}
	return nil
}

// kindOrder puts bases before apps.
func kindOrder(k kpkg.Kind) int {
	if k == kpkg.KindBase {
		return 0
	}
	return 1
}

// entryLess orders entries base first, then by name, oldest first.
func entryLess(a, b *Entry) bool {
	if ka, kb := kindOrder(a.Kind), kindOrder(b.Kind); ka != kb {
		return ka < kb
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.Version.Compare(b.Version) < 0
}
