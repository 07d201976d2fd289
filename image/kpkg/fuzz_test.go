package kpkg

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// FuzzOpen feeds Open arbitrary bytes. It must never panic, never return a
// package whose manifest does not verify with the trusted key, and never
// end a payload cleanly unless it matched the manifest. Seeds live in
// testdata/fuzz/FuzzOpen (regenerate them with KPKG_UPDATE_SEEDS=1 go test
// -run TestFuzzSeeds); run `go test -fuzz FuzzOpen ./image/kpkg` to search.
func FuzzOpen(f *testing.F) {
	trusted := []ed25519.PublicKey{pub(testKey(1))}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Open(bytes.NewReader(data), trusted)
		if err != nil {
			if p != nil {
				t.Fatalf("Open returned a package and %v", err)
			}
			return
		}
		if _, _, err := VerifyManifest(p.ManifestJSON, p.Signature, trusted); err != nil {
			t.Fatalf("Open accepted a manifest that does not verify: %v", err)
		}
		if err := p.Manifest.Validate(); err != nil {
			t.Fatalf("Open accepted an invalid manifest: %v", err)
		}
		h := sha256.New()
		n, err := io.Copy(h, p.Payload())
		if err != nil {
			if p.Verified() == nil {
				t.Fatalf("Verified is nil after %v", err)
			}
			return
		}
		if n != p.Manifest.Payload.Size || hex.EncodeToString(h.Sum(nil)) != p.Manifest.Payload.SHA256 {
			t.Fatalf("payload ended cleanly after %d bytes not matching the manifest", n)
		}
		if err := p.Verified(); err != nil {
			t.Fatalf("Verified after a clean end: %v", err)
		}
	})
}

// fuzzSeeds are the checked-in corpus: a valid package and near misses.
func fuzzSeeds(t testing.TB) map[string][]byte {
	key := testKey(1)
	m := testManifest()
	payload := testPayload(100)
	good := buildPackage(t, m, payload, key)
	entries := signedEntries(t, good[512:512+bytes.IndexByte(good[512:], 0)], payload, key)
	badPayload := bytes.Clone(good)
	badPayload[len(good)-1024-512+50] ^= 1
	return map[string][]byte{
		"valid":           good,
		"unknown-key":     buildPackage(t, m, payload, testKey(2)),
		"truncated":       good[:len(good)-1024-512+60],
		"payload-flipped": badPayload,
		"extra-entry":     rawPackage(t, append(entries, entry{name: "extra", data: []byte("x")})...),
		"pax-header":      rawPackage(t, entries[0], entries[1], entry{name: payloadEntry, data: payload, pax: map[string]string{"comment": "x"}}),
	}
}

// TestFuzzSeeds keeps the corpus in step with the format: the valid seed
// must still be exactly what Write makes.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
	for name, data := range fuzzSeeds(t) {
		path := filepath.Join(dir, name)
		want := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
		if os.Getenv("KPKG_UPDATE_SEEDS") != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is missing or stale (%v): KPKG_UPDATE_SEEDS=1 go test -run TestFuzzSeeds ./image/kpkg", path, err)
		}
	}
}
