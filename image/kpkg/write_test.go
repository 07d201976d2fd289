package kpkg

import (
	"bytes"
	"crypto/ed25519"
	"io"
	"strings"
	"testing"
)

func TestWriteIsReproducible(t *testing.T) {
	a := buildPackage(t, testManifest(), testPayload(5000), testKey(1))
	b := buildPackage(t, testManifest(), testPayload(5000), testKey(1))
	if !bytes.Equal(a, b) {
		t.Fatal("two packages from the same inputs differ")
	}
}

// Write packages the payload from where the reader stands, as its doc says.
func TestWriteFromOffset(t *testing.T) {
	key := testKey(1)
	payload := testPayload(2000)
	r := bytes.NewReader(append([]byte("skip"), payload...))
	r.Seek(4, io.SeekStart)
	var out bytes.Buffer
	if err := Write(&out, testManifest(), r, key); err != nil {
		t.Fatal(err)
	}
	_, got, _, err := openAll(out.Bytes(), []ed25519.PublicKey{pub(key)})
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("payload differs: %v", err)
	}
}

func TestWriteRefuses(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Manifest)
		payload []byte
		key     ed25519.PrivateKey
		want    string
	}{
		{"empty payload", func(*Manifest) {}, nil, testKey(1), "payload size 0 is not positive"},
		{"no name", func(m *Manifest) { m.Name = "" }, []byte("x"), testKey(1), `name ""`},
		{"name with a slash", func(m *Manifest) { m.Name = "a/b" }, []byte("x"), testKey(1), `name "a/b"`},
		{"kind", func(m *Manifest) { m.Kind = "Base" }, []byte("x"), testKey(1), `kind "Base"`},
		{"requirement", func(m *Manifest) { m.Requires[0].Op = "!=" }, []byte("x"), testKey(1), `operator "!="`},
		{"negative wait", func(m *Manifest) { m.Wait = -1 }, []byte("x"), testKey(1), "wait -1ns is negative"},
		{"empty hardware model", func(m *Manifest) { m.Hardware = []string{""} }, []byte("x"), testKey(1), "hardware model"},
		{"format", func(m *Manifest) { m.Format = 7 }, []byte("x"), testKey(1), "format 7"},
		{"notes too long", func(m *Manifest) { m.Notes = strings.Repeat("n", MaxManifestSize) }, []byte("x"), testKey(1), "shorten the release notes"},
		{"no key", func(*Manifest) {}, []byte("x"), nil, "signing key has 0 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := testManifest()
			tc.mutate(&m)
			var out bytes.Buffer
			err := Write(&out, m, bytes.NewReader(tc.payload), tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if out.Len() != 0 {
				t.Fatalf("wrote %d bytes before failing", out.Len())
			}
		})
	}
}

// changingReader returns other bytes on its second pass.
type changingReader struct {
	*bytes.Reader
	seeks int
}

func (c *changingReader) Seek(off int64, whence int) (int64, error) {
	c.seeks++
	if c.seeks == 2 {
		c.Reader = bytes.NewReader(bytes.Repeat([]byte{'B'}, int(c.Size())))
	}
	return c.Reader.Seek(off, whence)
}

func TestWritePayloadChanging(t *testing.T) {
	r := &changingReader{Reader: bytes.NewReader(bytes.Repeat([]byte{'A'}, 1000))}
	err := Write(io.Discard, testManifest(), r, testKey(1))
	if err == nil || !strings.Contains(err.Error(), "the payload changed while it was being packaged") {
		t.Fatalf("%v", err)
	}
}
