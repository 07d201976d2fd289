// Package downloadkey is keel's offline download key: a short text an
// appliance without Internet access issues, signed with its identity key,
// that names the appliance (serial, hardware, channel), what it has
// installed, and an expiry. An operator carries it to a machine with
// access, where the update server (`image serve`, `image redeem`) checks
// it against the appliance's registered identity key and answers with the
// bundle of packages that appliance needs. The package has no side effects
// besides LoadRegistry, which reads the file it is given.
//
// # Text
//
//	-----BEGIN KEEL DOWNLOAD KEY-----
//	<the body: base64 of its JSON, 64 characters a line>
//	-----SIGNATURE-----
//	<ed25519 signature over the exact body JSON: base64, 64 a line>
//	-----END KEEL DOWNLOAD KEY-----
//
// The body names the id of the key that signed it (kpkg.KeyID). Parse
// ignores text around the block, blank lines, indentation and carriage
// returns, so a key pasted from a mail or a web page still reads.
//
// # Registry
//
// appliances.json, in the release folder, maps each appliance's serial to
// its identity public key, written as the base64 of the key's PKIX DER:
// the line between "-----BEGIN PUBLIC KEY-----" and "-----END PUBLIC
// KEY-----" of the PEM an appliance shows (a whole PEM text is accepted
// too):
//
//	{"KX1-0001": "MCowBQYDK2VwAyEA..."}
package downloadkey

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"keel.dev/keel/image/kpkg"
)

// FormatVersion is the body format Issue writes and Parse accepts.
const FormatVersion = 1

// DefaultLifetime is how long a key the appliance issues stays valid.
const DefaultLifetime = 30 * time.Minute

// MaxLifetime is the longest lifetime Issue signs and Verify accepts.
const MaxLifetime = 24 * time.Hour

// MaxSkew is how far in the future Verify accepts an issue time, for
// clocks that differ a little.
const MaxSkew = 5 * time.Minute

// MaxSize bounds the text Parse reads.
const MaxSize = 32 << 10

const (
	beginLine = "-----BEGIN KEEL DOWNLOAD KEY-----"
	sigLine   = "-----SIGNATURE-----"
	endLine   = "-----END KEEL DOWNLOAD KEY-----"
)

// Body is what a download key says; the appliance signs it.
type Body struct {
	Format    int                        `json:"format"` // Issue sets it
	Serial    string                     `json:"serial"`
	Hardware  string                     `json:"hardware,omitempty"`
	Channel   string                     `json:"channel,omitempty"`
	Installed map[kpkg.Kind]kpkg.Version `json:"installed"`
	Names     map[kpkg.Kind]string       `json:"names,omitempty"` // installed package name per kind
	Issued    time.Time                  `json:"issued"`
	Expires   time.Time                  `json:"expires"`
	KeyID     string                     `json:"key_id"` // Issue sets it from the identity key
}

// Key is a parsed download key; Verify says whether to believe it.
type Key struct {
	Body
	BodyJSON  []byte // the exact bytes signed
	Signature []byte
}

func (b *Body) validate() error {
	if b.Format != FormatVersion {
		return fmt.Errorf("format %d is not %d", b.Format, FormatVersion)
	}
	if b.Serial == "" || len(b.Serial) > 128 || strings.ContainsAny(b.Serial, " \t\r\n/\\") {
		return fmt.Errorf("serial %q is empty, too long, or has spaces or slashes", b.Serial)
	}
	for k := range b.Installed {
		if k != kpkg.KindBase && k != kpkg.KindApp {
			return fmt.Errorf("installed kind %q is neither base nor app", k)
		}
	}
	if b.Issued.IsZero() || b.Expires.IsZero() {
		return fmt.Errorf("the issue or expiry time is missing")
	}
	if len(b.KeyID) != 16 {
		return fmt.Errorf("key id %q is not 16 hex digits", b.KeyID)
	}
	return nil
}

// Issue signs the body with the appliance's identity key and returns the
// key's text. It sets Format and KeyID; Issued and Expires must be set
// (Issued plus DefaultLifetime, usually) and no further apart than
// MaxLifetime. An appliance should issue keys only while its clock is
// synchronized.
func Issue(body Body, identityKey ed25519.PrivateKey) ([]byte, error) {
	if len(identityKey) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("download key: the identity key has %d bytes, not %d", len(identityKey), ed25519.PrivateKeySize)
	}
	body.Format = FormatVersion
	body.KeyID = kpkg.KeyID(identityKey.Public().(ed25519.PublicKey))
	body.Issued, body.Expires = body.Issued.UTC(), body.Expires.UTC()
	err := body.validate()
	if err == nil {
		err = body.checkLifetime()
	}
	if err != nil {
		return nil, fmt.Errorf("download key: %w", err)
	}
	bj, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("download key: %w", err)
	}
	var out bytes.Buffer
	out.WriteString(beginLine + "\n")
	wrap(&out, base64.StdEncoding.EncodeToString(bj))
	out.WriteString(sigLine + "\n")
	wrap(&out, base64.StdEncoding.EncodeToString(ed25519.Sign(identityKey, bj)))
	out.WriteString(endLine + "\n")
	return out.Bytes(), nil
}

func wrap(out *bytes.Buffer, s string) {
	for len(s) > 64 {
		out.WriteString(s[:64] + "\n")
		s = s[64:]
	}
	out.WriteString(s + "\n")
}

// checkLifetime refuses a key that expires before it is issued or lives
// longer than MaxLifetime.
func (b *Body) checkLifetime() error {
	if !b.Expires.After(b.Issued) {
		return fmt.Errorf("it expires (%s) before it is issued (%s)", stamp(b.Expires), stamp(b.Issued))
	}
	if l := b.Expires.Sub(b.Issued); l > MaxLifetime {
		return fmt.Errorf("its lifetime of %v is longer than the %v allowed", l, MaxLifetime)
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// Errors Verify wraps, so a server can tell them apart.
var (
	// ErrForged: the signature does not verify with the registered key.
	ErrForged = errors.New("the download key is not signed by the appliance's registered identity key")
	// ErrExpired: the key's expiry has passed.
	ErrExpired = errors.New("the download key expired")
	// ErrClock: the key's times cannot be right.
	ErrClock = errors.New("the download key's times are wrong")
)

// Parse reads a download key's text. It checks the form only; Verify says
// whether to believe it.
func Parse(text []byte) (*Key, error) {
	if len(text) > MaxSize {
		return nil, fmt.Errorf("this is not a download key: it has %d bytes, and a key has far fewer than %d", len(text), MaxSize)
	}
	var section int // 0 before BEGIN, 1 body, 2 signature, 3 after END
	var body, sig strings.Builder
	for _, line := range strings.Split(string(text), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case section == 0:
			if line == beginLine {
				section = 1
			}
		case line == sigLine && section == 1:
			section = 2
		case line == endLine && section == 2:
			section = 3
		case line == beginLine || line == sigLine || line == endLine:
			return nil, fmt.Errorf("the download key is damaged: %q is out of place; paste exactly one key, from its BEGIN line to its END line", line)
		case section == 1:
			body.WriteString(line)
		case section == 2:
			sig.WriteString(line)
		}
	}
	switch section {
	case 0:
		return nil, fmt.Errorf("this is not a download key: it has no line %q; paste the whole key, from its BEGIN line to its END line", beginLine)
	case 1, 2:
		return nil, fmt.Errorf("the download key is cut short: it has no line %q; paste the whole key, from its BEGIN line to its END line", endLine)
	}
	bj, err := base64.StdEncoding.DecodeString(body.String())
	if err != nil {
		return nil, fmt.Errorf("the download key is damaged: its body is not base64 (%v); copy it again from the appliance", err)
	}
	sb, err := base64.StdEncoding.DecodeString(sig.String())
	if err != nil || len(sb) != ed25519.SignatureSize {
		return nil, fmt.Errorf("the download key is damaged: its signature is not %d bytes of base64; copy it again from the appliance", ed25519.SignatureSize)
	}
	k := &Key{BodyJSON: bj, Signature: sb}
	var probe struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(bj, &probe); err != nil {
		return nil, fmt.Errorf("the download key is damaged: its body is not JSON (%v); copy it again from the appliance", err)
	}
	if probe.Format > FormatVersion {
		return nil, fmt.Errorf("the download key has format %d, newer than this server understands (%d): update the update server", probe.Format, FormatVersion)
	}
	d := json.NewDecoder(bytes.NewReader(bj))
	d.DisallowUnknownFields()
	if err := d.Decode(&k.Body); err != nil {
		return nil, fmt.Errorf("the download key is damaged: %v; copy it again from the appliance", err)
	}
	if d.More() {
		return nil, fmt.Errorf("the download key is damaged: data follows its body; copy it again from the appliance")
	}
	if err := k.Body.validate(); err != nil {
		return nil, fmt.Errorf("the download key is invalid: %v; ask the appliance for a new one", err)
	}
	return k, nil
}

// Verify checks the key against the appliance's registered identity key
// and the time now: the signature, the lifetime (at most MaxLifetime), an
// issue time no more than MaxSkew ahead of now, and the expiry.
func (k *Key) Verify(pub ed25519.PublicKey, now time.Time) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("the registered identity key of appliance %s has %d bytes, not %d: register its key again", k.Serial, len(pub), ed25519.PublicKeySize)
	}
	if id := kpkg.KeyID(pub); id != k.KeyID {
		return fmt.Errorf("%w: it names key %s, and appliance %s is registered with key %s; register the appliance's current identity key, or ask the appliance for a new key",
			ErrForged, k.KeyID, k.Serial, id)
	}
	if !ed25519.Verify(pub, k.BodyJSON, k.Signature) {
		return fmt.Errorf("%w (key %s): it was altered or forged; copy it again from the appliance", ErrForged, k.KeyID)
	}
	if err := k.Body.checkLifetime(); err != nil {
		return fmt.Errorf("%w: %v; ask the appliance for a new one", ErrClock, err)
	}
	if k.Issued.After(now.Add(MaxSkew)) {
		return fmt.Errorf("%w: it was issued at %s, which is in the future (it is %s here): the appliance's clock is ahead; set its time and issue a new key",
			ErrClock, stamp(k.Issued), stamp(now))
	}
	if !now.Before(k.Expires) {
		return fmt.Errorf("%w at %s; ask the appliance for a new one", ErrExpired, stamp(k.Expires))
	}
	return nil
}
