package tarstream

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

var (
	errShort    = errors.New("short")
	errMismatch = errors.New("mismatch")
)

// member archives payload as one member and returns a Member reading it
// that expects want.
func member(t *testing.T, payload []byte, want string) *Member {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "payload", Mode: 0o644, Size: int64(len(payload)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	tw.Write(payload)
	tw.Close()
	src := NewSource(&buf)
	tr := tar.NewReader(src)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	return &Member{TR: tr, Src: src, Size: int64(len(payload)), Want: want,
		Where:    func(int64) string { return "" },
		Short:    func(int64) error { return errShort },
		Mismatch: func(string) error { return errMismatch },
	}
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// The payload's hash is checked whole whatever the reads' sizes, now that
// it is hashed a MiB at a time beside the reading: a payload that matches
// ends in io.EOF, and one changed byte anywhere, in the first MiB, on a
// chunk's edge or in the last bytes, ends in the mismatch.
func TestMemberChecksTheWholePayload(t *testing.T) {
	payload := make([]byte, 3*HashChunk+12345)
	rand.NewChaCha8([32]byte{1}).Read(payload)
	good := sum(payload)
	for _, bufSize := range []int{1, 511, 16 << 10, HashChunk, 3 * HashChunk} {
		if bufSize == 1 && testing.Short() {
			continue
		}
		buf := make([]byte, bufSize)
		read := func(m *Member) ([]byte, error) {
			var out []byte
			for {
				n, err := m.Read(buf)
				out = append(out, buf[:n]...)
				if err != nil {
					return out, err
				}
			}
		}
		out, err := read(member(t, payload, good))
		if err != io.EOF || !bytes.Equal(out, payload) {
			t.Fatalf("reads of %d bytes: %v, %d bytes of %d", bufSize, err, len(out), len(payload))
		}
		for _, at := range []int{0, HashChunk - 1, HashChunk, 2*HashChunk + 7, len(payload) - 1} {
			bad := bytes.Clone(payload)
			bad[at] ^= 1
			if _, err := read(member(t, bad, good)); !errors.Is(err, errMismatch) {
				t.Errorf("reads of %d bytes, byte %d changed: %v, want the mismatch", bufSize, at, err)
			}
		}
	}
}

// A member that ends early is short, not a mismatch, even after whole
// chunks went to the hasher.
func TestMemberCutOffIsShort(t *testing.T) {
	payload := make([]byte, 2*HashChunk+100)
	m := member(t, payload, sum(payload))
	m.Size += 5000 // the archive holds less than the manifest says
	_, err := io.Copy(io.Discard, m)
	if !errors.Is(err, errShort) {
		t.Fatalf("got %v, want short", err)
	}
}
