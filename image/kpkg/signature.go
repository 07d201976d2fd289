package kpkg

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// maxSignatureSize bounds manifest.sig; a real one is about 120 bytes.
const maxSignatureSize = 4 << 10

// signature is the content of manifest.sig.
type signature struct {
	KeyID   string `json:"key_id"`
	Ed25519 []byte `json:"ed25519"` // base64 in JSON
}

// sign signs the exact manifest bytes and encodes manifest.sig.
func sign(manifest []byte, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("signing key has %d bytes, not %d", len(key), ed25519.PrivateKeySize)
	}
	s := signature{
		KeyID:   KeyID(key.Public().(ed25519.PublicKey)),
		Ed25519: ed25519.Sign(key, manifest),
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// VerifyManifest checks the signature (the content of manifest.sig) over
// the exact manifest bytes with the trusted key it names, and only then
// decodes and validates the manifest. It returns the manifest and the id
// of the key that signed it. Besides Open, it serves for a manifest kept
// apart from its payload: next to an installed slot, or in a catalog.
func VerifyManifest(manifest, sig []byte, trusted []ed25519.PublicKey) (*Manifest, string, error) {
	var s signature
	if err := json.Unmarshal(sig, &s); err != nil {
		return nil, "", fmt.Errorf("%w: manifest.sig is not a signature: %v", ErrDamaged, err)
	}
	// Only the form sign writes is accepted, so that no bit of a package
	// outside the archive's padding can change without notice.
	if canon, err := json.Marshal(s); err != nil || !bytes.Equal(append(canon, '\n'), sig) {
		return nil, "", fmt.Errorf("%w: manifest.sig is not in the form keel writes", ErrDamaged)
	}
	if _, err := hex.DecodeString(s.KeyID); err != nil || len(s.KeyID) != 16 {
		return nil, "", fmt.Errorf("%w: manifest.sig names key %q, which is not 16 hex digits", ErrDamaged, s.KeyID)
	}
	if len(s.Ed25519) != ed25519.SignatureSize {
		return nil, "", fmt.Errorf("%w: manifest.sig holds %d signature bytes, not %d", ErrDamaged, len(s.Ed25519), ed25519.SignatureSize)
	}
	var pub ed25519.PublicKey
	for _, k := range trusted {
		if len(k) == ed25519.PublicKeySize && KeyID(k) == s.KeyID {
			pub = k
			break
		}
	}
	if pub == nil {
		return nil, "", fmt.Errorf("package is %w %s", ErrUnknownKey, s.KeyID)
	}
	if !ed25519.Verify(pub, manifest, s.Ed25519) {
		return nil, "", fmt.Errorf("%w with key %s: the manifest or its signature was changed after signing", ErrSignature, s.KeyID)
	}
	m, err := parseManifest(manifest)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrManifest, err)
	}
	return m, s.KeyID, nil
}
