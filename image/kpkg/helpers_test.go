package kpkg

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"
)

// testKey is a fixed key per seed byte, so fuzz seeds stay valid.
func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func testManifest() Manifest {
	return Manifest{
		Kind: KindBase, Name: "keel", Version: MustParseVersion("1.2.3"),
		Hardware: []string{"keel-vm", "kx-100"},
		Requires: []Requirement{{Kind: KindBase, Op: OpGE, Version: MustParseVersion("1.0.0")}},
		Wait:     Duration(24 * time.Hour),
		Notes:    "Fixes the clock.\n",
	}
}

// testPayload is deterministic and not a multiple of the tar block, so
// padding is exercised.
func testPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

func buildPackage(t testing.TB, m Manifest, payload []byte, key ed25519.PrivateKey) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := Write(&out, m, bytes.NewReader(payload), key); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

type entry struct {
	name string
	data []byte
	typ  byte // 0 means tar.TypeReg
	pax  map[string]string
}

// rawPackage assembles an archive by hand, to make packages Write refuses
// to make.
func rawPackage(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, e := range entries {
		h := header(e.name, int64(len(e.data)))
		if e.typ != 0 {
			h.Typeflag = e.typ
		}
		if e.pax != nil {
			h.Format, h.PAXRecords = tar.FormatPAX, e.pax
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// signedEntries makes the three entries of a package whose manifest is
// given as raw JSON, signed with key.
func signedEntries(t testing.TB, manifestJSON, payload []byte, key ed25519.PrivateKey) []entry {
	t.Helper()
	sig, err := sign(manifestJSON, key)
	if err != nil {
		t.Fatal(err)
	}
	return []entry{{name: manifestEntry, data: manifestJSON}, {name: signatureEntry, data: sig}, {name: payloadEntry, data: payload}}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
