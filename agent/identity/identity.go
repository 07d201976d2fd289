// Package identity gives the appliance its long-lived identity: the
// self-signed TLS certificate it serves the API with, and an ed25519 key it
// signs things with (download keys, later). Both are created on first boot and
// then never replaced behind the operator's back, because operators pin the
// certificate fingerprint and peers trust the identity key.
package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside the identity folder.
const (
	CertFile = "tls.crt"      // PEM certificate
	KeyFile  = "tls.key"      // PEM PKCS#8 private key of the certificate
	SignFile = "identity.key" // PEM PKCS#8 ed25519 identity key
)

// Identity is the appliance's certificate and identity key.
type Identity struct {
	TLS tls.Certificate    // Leaf is set
	Key ed25519.PrivateKey // signs download keys and other appliance statements
}

// Fingerprint is the SHA-256 of the certificate in DER, as colon-separated
// upper-case hex, the form browsers and openssl show, so an operator can
// compare it by eye.
func (id *Identity) Fingerprint() string {
	if len(id.TLS.Certificate) == 0 {
		return ""
	}
	return Fingerprint(id.TLS.Certificate[0])
}

// Fingerprint formats the SHA-256 of a DER certificate like
// (*Identity).Fingerprint.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// LoadOrCreate loads the identity kept in dir, creating whatever is missing.
// hosts (names or IP addresses) go into a new certificate's SANs next to the
// loopback names; they are ignored when the certificate already exists, since
// the certificate never changes once made. now is only used for a new
// certificate's expiry.
//
// An existing file is never overwritten: one that cannot be read or parsed is
// an error naming the file and what to do about it.
func LoadOrCreate(dir string, serial string, hosts []string, now func() time.Time) (*Identity, error) {
	if serial == "" {
		return nil, errors.New("identity: the serial number is empty; it is needed as the certificate's common name")
	}
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: create folder: %w", err)
	}
	id := &Identity{}
	var err error
	// The identity key is written first and the certificate last, so a power
	// cut during first boot leaves a state the next boot can complete.
	if id.Key, err = loadOrCreateSigningKey(filepath.Join(dir, SignFile)); err != nil {
		return nil, err
	}
	if id.TLS, err = loadOrCreateCert(dir, serial, hosts, now()); err != nil {
		return nil, err
	}
	return id, nil
}

// readIfExists returns the file's content, or nil and no error if it does not
// exist.
func readIfExists(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("identity: read %s: %w", path, err)
	}
	return data, nil
}

// PublicKeyPin is the base64 SHA-256 of the certificate's public key, as
// `curl --pinnedpubkey sha256//PIN` takes it.
func (id *Identity) PublicKeyPin() string {
	if id.TLS.Leaf == nil {
		return ""
	}
	sum := sha256.Sum256(id.TLS.Leaf.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
