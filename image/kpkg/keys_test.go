package kpkg

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"testing"
)

func TestKeysRoundTrip(t *testing.T) {
	a, b := testKey(1), testKey(2)
	privPEM, err := MarshalPrivateKey(a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePrivateKey(privPEM)
	if err != nil || !got.Equal(a) {
		t.Fatalf("private key round trip: %v", err)
	}
	pa, _ := MarshalPublicKey(pub(a))
	pb, _ := MarshalPublicKey(pub(b))
	keys, err := ParsePublicKeys(append(pa, pb...))
	if err != nil || len(keys) != 2 || !keys[0].Equal(pub(a)) || !keys[1].Equal(pub(b)) {
		t.Fatalf("public keys: %d keys, %v", len(keys), err)
	}
	if !bytes.HasPrefix(pa, []byte("-----BEGIN PUBLIC KEY-----\n")) || !bytes.HasPrefix(privPEM, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Fatalf("not the PEM openssl writes:\n%s%s", pa, privPEM)
	}
}

func TestParseKeysRejects(t *testing.T) {
	privPEM, _ := MarshalPrivateKey(testKey(1))
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	ecPub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	der, _ = x509.MarshalPKCS8PrivateKey(ec)
	ecPriv := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	pa, _ := MarshalPublicKey(pub(testKey(1)))

	for name, in := range map[string][]byte{
		"empty": nil, "not PEM": []byte("hello"), "a private key among public keys": append(pa, privPEM...),
		"an ECDSA key": ecPub, "garbage in the block": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}}),
	} {
		if _, err := ParsePublicKeys(in); err == nil {
			t.Errorf("ParsePublicKeys, %s: accepted", name)
		}
	}
	for name, in := range map[string][]byte{"empty": nil, "a public key": pa, "an ECDSA key": ecPriv} {
		if _, err := ParsePrivateKey(in); err == nil {
			t.Errorf("ParsePrivateKey, %s: accepted", name)
		}
	}
}

func TestKeyID(t *testing.T) {
	p := pub(testKey(1))
	sum := sha256.Sum256(p)
	if id := KeyID(p); id != hex.EncodeToString(sum[:8]) || len(id) != 16 {
		t.Fatalf("KeyID = %s", id)
	}
	if KeyID(p) == KeyID(pub(testKey(2))) {
		t.Fatal("two keys, one id")
	}
}
