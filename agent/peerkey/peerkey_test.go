package peerkey

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestGeneratedKeyPastedIntoTheOtherBoxMatches(t *testing.T) {
	a := &Store{Path: filepath.Join(t.TempDir(), "peer.key")}
	b := &Store{Path: filepath.Join(t.TempDir(), "peer.key")}
	if a.Load() != nil || a.Key() != "" {
		t.Fatal("a new box has a key")
	}
	k, err := a.Generate()
	if err != nil || len(k) < 40 {
		t.Fatalf("generate: %q %v", k, err)
	}
	if err := b.Set(" " + k + "\n"); err != nil {
		t.Fatal(err)
	}
	if Fingerprint(a.Key()) != Fingerprint(b.Key()) || Fingerprint(k) == Fingerprint(k+"x") {
		t.Fatal("fingerprints do not tell keys apart")
	}
	again := &Store{Path: b.Path}
	if again.Load() != nil || again.Key() != k {
		t.Fatal("the key did not survive a restart")
	}
	for _, bad := range []string{"short", "has a space in the middle of it!!", string(make([]byte, 300))} {
		if err := b.Set(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
