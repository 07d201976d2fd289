package downloadkey

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"keel.dev/keel/image/kpkg"
)

// RegistryFile is the registry's name in the release folder.
const RegistryFile = "appliances.json"

// Registry maps appliance serials to their identity public keys.
type Registry struct {
	name string // for messages
	keys map[string]ed25519.PublicKey
}

// LoadRegistry reads a registry file (see the package documentation).
func LoadRegistry(path string) (*Registry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no appliance is registered: %s does not exist; create it as {\"SERIAL\": \"IDENTITY PUBLIC KEY\"}", path)
	}
	if err != nil {
		return nil, err
	}
	r, err := ParseRegistry(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.name = filepath.Base(path)
	return r, nil
}

// ParseRegistry reads a registry's JSON.
func ParseRegistry(b []byte) (*Registry, error) {
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("the registry is not a JSON object of \"SERIAL\": \"IDENTITY PUBLIC KEY\" (%v); correct it", err)
	}
	r := &Registry{name: RegistryFile, keys: make(map[string]ed25519.PublicKey, len(raw))}
	for serial, text := range raw {
		pub, err := ParsePublicKey(text)
		if err != nil {
			return nil, fmt.Errorf("the key of appliance %q: %w", serial, err)
		}
		r.keys[serial] = pub
	}
	return r, nil
}

// Lookup returns the identity key registered for serial.
func (r *Registry) Lookup(serial string) (ed25519.PublicKey, error) {
	if pub, ok := r.keys[serial]; ok {
		return pub, nil
	}
	return nil, fmt.Errorf("appliance %q is not registered: add its serial and identity public key to %s in the release folder", serial, r.name)
}

// EncodePublicKey writes a key as the registry holds it: the base64 of its
// PKIX DER, which is the body of its PEM "PUBLIC KEY" block.
func EncodePublicKey(pub ed25519.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// ParsePublicKey reads a key as the registry holds it, or a whole PEM
// "PUBLIC KEY" text.
func ParsePublicKey(text string) (ed25519.PublicKey, error) {
	text = strings.TrimSpace(text)
	if strings.HasPrefix(text, "-----BEGIN") {
		keys, err := kpkg.ParsePublicKeys([]byte(text))
		if err != nil {
			return nil, err
		}
		if len(keys) != 1 {
			return nil, fmt.Errorf("%d PEM keys where one belongs", len(keys))
		}
		return keys[0], nil
	}
	der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(text), ""))
	if err != nil {
		return nil, fmt.Errorf("%q is neither base64 nor PEM: give the line between BEGIN PUBLIC KEY and END PUBLIC KEY", text)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("not a public key (%v): give the line between BEGIN PUBLIC KEY and END PUBLIC KEY", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T is not an ed25519 key: register the appliance's ed25519 identity key", k)
	}
	return pub, nil
}
