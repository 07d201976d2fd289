package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"keel.dev/keel/agent/atomicfile"
)

func loadOrCreateSigningKey(path string) (ed25519.PrivateKey, error) {
	data, err := readIfExists(path)
	if err != nil {
		return nil, err
	}
	if data != nil {
		key, err := parseSigningKey(data)
		if err != nil {
			return nil, fmt.Errorf("identity: %s is corrupt (%v); restore it from a backup, or delete it to create a new identity key (download keys signed with the old one will stop working)", path, err)
		}
		return key, nil
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate identity key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: encode identity key: %w", err)
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("identity: save identity key: %w", err)
	}
	return key, nil
}

func parseSigningKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is a %T, not ed25519", k)
	}
	return key, nil
}
