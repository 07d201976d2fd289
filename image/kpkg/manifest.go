package kpkg

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// FormatVersion is the manifest format Write produces and Open accepts.
// A reader refuses a newer format rather than guess at fields it cannot
// honour (a new kind of requirement, say).
const FormatVersion = 1

// MaxManifestSize bounds the memory a reader spends before the signature is
// checked. Release notes are the only field that can grow.
const MaxManifestSize = 64 << 10

// Kind says which pair of slots a package is for.
type Kind string

// The kinds of package.
const (
	KindBase Kind = "base"
	KindApp  Kind = "app"
)

func (k Kind) valid() bool { return k == KindBase || k == KindApp }

// Manifest describes a package. It is what the vendor signs.
type Manifest struct {
	Format  int     `json:"format"` // FormatVersion; Write fills it in when 0
	Kind    Kind    `json:"kind"`
	Name    string  `json:"name"` // e.g. "keel"; lower case, digits, ".", "_", "-"
	Version Version `json:"version"`
	Payload Payload `json:"payload"` // Write fills it in
	// Hardware lists the hardware models the package runs on; empty means any.
	Hardware []string `json:"hardware,omitempty"`
	// Requires must all hold on the box before the package installs.
	Requires []Requirement `json:"requires,omitempty"`
	// Wait is how long a box waits after installing this package before it
	// installs the next package of the same kind.
	Wait  Duration `json:"wait,omitempty"`
	Notes string   `json:"notes,omitempty"` // release notes, plain text
	// Floor, for a base, is the oldest base version a box may run once
	// this one is committed (an anti-rollback floor: the versions below
	// have a flaw that must not come back). No downgrade option goes
	// below it. The zero version is no floor.
	Floor Version `json:"floor,omitzero"`
}

// Payload identifies the slot image that follows the manifest.
type Payload struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// Duration is a time.Duration written in JSON as Go writes durations
// ("24h0m0s"), so a manifest reads well.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a non-negative duration string such as "24h".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"24h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}

// Validate checks every field, so that what a reader accepts is exactly
// what a writer can produce.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("format %d is not %d", m.Format, FormatVersion)
	}
	if !m.Kind.valid() {
		return fmt.Errorf("kind %q is neither %q nor %q", m.Kind, KindBase, KindApp)
	}
	if err := CheckName(m.Name); err != nil {
		return fmt.Errorf("name %w", err)
	}
	if m.Payload.Size <= 0 {
		return fmt.Errorf("payload size %d is not positive", m.Payload.Size)
	}
	if h := m.Payload.SHA256; len(h) != 64 || strings.ToLower(h) != h {
		return fmt.Errorf("payload sha256 %q is not 64 lower-case hex digits", h)
	} else if _, err := hex.DecodeString(h); err != nil {
		return fmt.Errorf("payload sha256 %q is not 64 lower-case hex digits", h)
	}
	for _, h := range m.Hardware {
		if h == "" || len(h) > 128 || strings.IndexFunc(h, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			return fmt.Errorf("hardware model %q is empty, too long or not printable", h)
		}
	}
	for _, r := range m.Requires {
		if err := r.validate(); err != nil {
			return err
		}
	}
	if m.Wait < 0 {
		return fmt.Errorf("wait %v is negative", time.Duration(m.Wait))
	}
	if m.Floor != (Version{}) {
		if m.Kind != KindBase {
			return fmt.Errorf("floor %s: only a base package can set an anti-rollback floor", m.Floor)
		}
		if m.Floor.Compare(m.Version) > 0 {
			return fmt.Errorf("floor %s is above the package's own version %s", m.Floor, m.Version)
		}
	}
	return nil
}

// CheckName accepts a package name: 1 to 64 of a-z, 0-9, '.', '_', '-',
// starting with a letter or digit. The error quotes s and says what a name
// is; it does not say "name", for the caller to name the field.
func CheckName(s string) error {
	ok := s != "" && len(s) <= 64
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')) {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%q is not 1 to 64 of a-z, 0-9, '.', '_', '-' starting with a letter or digit", s)
	}
	return nil
}

// marshal encodes the manifest the way Write signs it: indented, so that
// `tar -xOf` output is readable, without HTML escaping (">=" stays ">="),
// with a final newline.
func (m *Manifest) marshal() ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	e.SetIndent("", "  ")
	if err := e.Encode(m); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// parseManifest decodes signed manifest bytes. Unknown fields are refused:
// a field this reader ignores could be one a newer vendor tool relies on.
func parseManifest(b []byte) (*Manifest, error) {
	var probe struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, err
	}
	if probe.Format > FormatVersion {
		return nil, fmt.Errorf("format %d is newer than this reader understands (%d): update first", probe.Format, FormatVersion)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var m Manifest
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// CheckHardware says whether the package runs on the hardware model.
func (m *Manifest) CheckHardware(model string) error {
	if len(m.Hardware) == 0 {
		return nil
	}
	for _, h := range m.Hardware {
		if h == model {
			return nil
		}
	}
	return fmt.Errorf("%s %s %s is for hardware %s; this box is %q",
		m.Kind, m.Name, m.Version, quoteList(m.Hardware), model)
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// CheckRequirements checks the package's requirements against what the box
// has installed (a version per kind; a missing kind is not installed) and
// returns the first that does not hold.
func (m *Manifest) CheckRequirements(installed map[Kind]Version) error {
	for _, r := range m.Requires {
		if err := r.Check(installed); err != nil {
			return err
		}
	}
	return nil
}
