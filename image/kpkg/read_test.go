package kpkg

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"keel.dev/keel/image/tarstream"
)

// openAll opens a package and streams its payload to the end, the way the
// agent writes a slot; it returns the package, the payload and the first
// error of either step, and whether Open itself failed.
func openAll(data []byte, trusted []ed25519.PublicKey) (p *Package, payload []byte, openFailed bool, err error) {
	p, err = Open(bytes.NewReader(data), trusted)
	if err != nil {
		if p != nil {
			panic("Open returned a package with an error")
		}
		return nil, nil, true, err
	}
	var buf bytes.Buffer
	_, err = io.Copy(&buf, p.Payload())
	return p, buf.Bytes(), false, err
}

func TestRoundTrip(t *testing.T) {
	key := testKey(1)
	for _, n := range []int{1, 511, 512, 513, 4096, 100_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			payload := testPayload(n)
			data := buildPackage(t, testManifest(), payload, key)
			p, got, _, err := openAll(data, []ed25519.PublicKey{pub(testKey(9)), pub(key)})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("payload differs")
			}
			if err := p.Verified(); err != nil {
				t.Fatalf("Verified after a full read: %v", err)
			}
			want := testManifest()
			want.Format, want.Payload = FormatVersion, Payload{Size: int64(n), SHA256: sha256hex(payload)}
			gj, _ := json.Marshal(p.Manifest)
			wj, _ := json.Marshal(want)
			if !bytes.Equal(gj, wj) {
				t.Fatalf("manifest\n got %s\nwant %s", gj, wj)
			}
			if p.KeyID != KeyID(pub(key)) {
				t.Fatalf("key id %s, want %s", p.KeyID, KeyID(pub(key)))
			}
			if _, _, err := VerifyManifest(p.ManifestJSON, p.Signature, []ed25519.PublicKey{pub(key)}); err != nil {
				t.Fatalf("VerifyManifest on what Open kept: %v", err)
			}
			if len(data)%tarstream.BlockSize != 0 {
				t.Fatalf("package is %d bytes, not whole tar blocks", len(data))
			}
		})
	}
}

func TestOpenRejects(t *testing.T) {
	keyA, keyB := testKey(1), testKey(2)
	trusted := []ed25519.PublicKey{pub(keyA)}
	payload := testPayload(3000)
	good := buildPackage(t, testManifest(), payload, keyA)
	byB := buildPackage(t, testManifest(), payload, keyB)
	payloadAt := len(good) - 1024 - 3072 // 3000 bytes pad to 3072, then the marker

	flip := func(b []byte, off int) []byte {
		c := bytes.Clone(b)
		c[off] ^= 0x10
		return c
	}
	signedJSON := func(mutate func(map[string]any)) []byte {
		m := testManifest()
		m.Format, m.Payload = FormatVersion, Payload{Size: int64(len(payload)), SHA256: sha256hex(payload)}
		b, _ := json.Marshal(m)
		var v map[string]any
		json.Unmarshal(b, &v)
		mutate(v)
		b, _ = json.Marshal(v)
		return b
	}
	withManifest := func(mj []byte, payload []byte) []byte {
		return rawPackage(t, signedEntries(t, mj, payload, keyA)...)
	}
	entries := signedEntries(t, good[512:512+bytes.IndexByte(good[512:], 0)], payload, keyA)

	tests := []struct {
		name     string
		data     []byte
		trusted  []ed25519.PublicKey
		wantErr  error  // the sentinel the error wraps
		inOpen   bool   // Open fails, rather than the payload stream
		wantText string // the error's message begins with it
	}{
		{name: "signed by another key under a trusted key's id",
			data:    bytes.ReplaceAll(byB, []byte(KeyID(pub(keyB))), []byte(KeyID(pub(keyA)))),
			wantErr: ErrSignature, inOpen: true, wantText: "signature does not verify with key " + KeyID(pub(keyA))},
		{name: "unknown key", data: byB, wantErr: ErrUnknownKey, inOpen: true,
			wantText: "package is signed by an unknown key " + KeyID(pub(keyB))},
		{name: "no trusted keys", data: good, trusted: []ed25519.PublicKey{}, wantErr: ErrUnknownKey, inOpen: true,
			wantText: "package is signed by an unknown key"},
		{name: "flipped bit in the manifest", data: flip(good, 512+40), wantErr: ErrSignature, inOpen: true,
			wantText: "signature does not verify"},
		{name: "flipped bit in the payload", data: flip(good, payloadAt+1234), wantErr: ErrPayload,
			wantText: "payload does not match the manifest: its SHA-256 is"},
		{name: "flipped bit in the last payload byte", data: flip(good, payloadAt+2999), wantErr: ErrPayload,
			wantText: "payload does not match the manifest"},
		{name: "flipped bit in a header", data: flip(good, 100), wantErr: ErrDamaged, inOpen: true,
			wantText: "package is damaged near byte 512 (before manifest.json)"},
		{name: "empty", data: nil, wantErr: ErrTruncated, inOpen: true,
			wantText: "package is truncated: it ends at byte 0, before manifest.json"},
		{name: "truncated in the manifest", data: good[:512+20], wantErr: ErrTruncated, inOpen: true,
			wantText: "package is truncated: manifest.json has 20 of"},
		{name: "truncated in the payload", data: good[:payloadAt+1000], wantErr: ErrTruncated,
			wantText: "package is truncated: payload has 1000 of 3000 bytes"},
		{name: "truncated in the end marker", data: good[:len(good)-1], wantErr: ErrTruncated,
			wantText: "package is truncated: it ends at byte"},
		{name: "end marker missing", data: good[:len(good)-1024], wantErr: ErrTruncated,
			wantText: "package is truncated"},
		{name: "not a package", data: bytes.Repeat([]byte("keel "), 300), wantErr: ErrDamaged, inOpen: true,
			wantText: "package is damaged"},
		{name: "oversized manifest",
			data:    rawPackage(t, entry{name: manifestEntry, data: make([]byte, MaxManifestSize+1)}),
			wantErr: ErrDamaged, inOpen: true, wantText: "package is damaged: manifest.json has 65537 bytes, more than the 65536 allowed"},
		{name: "entries out of order", data: rawPackage(t, entries[1], entries[0], entries[2]),
			wantErr: ErrDamaged, inOpen: true, wantText: `package is damaged: entry "manifest.sig" is where manifest.json belongs`},
		{name: "payload missing", data: rawPackage(t, entries[0], entries[1]),
			wantErr: ErrTruncated, inOpen: true, wantText: "package is truncated: it ends at byte 3072, before payload"},
		{name: "payload entry longer than the manifest says", data: withManifest(entries[0].data, append(bytes.Clone(payload), 0)),
			wantErr: ErrDamaged, inOpen: true, wantText: "package is damaged: the payload entry has 3001 bytes but the manifest says 3000"},
		{name: "payload entry shorter than the manifest says", data: withManifest(entries[0].data, payload[:2999]),
			wantErr: ErrDamaged, inOpen: true, wantText: "package is damaged: the payload entry has 2999 bytes"},
		{name: "entry after the payload", data: rawPackage(t, append(entries, entry{name: "extra", data: []byte("x")})...),
			wantErr: ErrDamaged, wantText: "package is damaged: data follows the payload"},
		{name: "payload is a link", data: rawPackage(t, entries[0], entries[1], entry{name: payloadEntry, typ: '1'}),
			wantErr: ErrDamaged, inOpen: true, wantText: "package is damaged: payload is not a regular file"},
		{name: "extended headers on the payload",
			data: rawPackage(t, entries[0], entries[1], entry{name: payloadEntry, data: payload,
				pax: map[string]string{"comment": "hi"}}),
			wantErr: ErrDamaged, inOpen: true, wantText: "package is damaged: payload has extended (PAX) headers"},
		{name: "signature re-encoded", data: rawPackage(t, entries[0],
			entry{name: signatureEntry, data: bytes.Replace(entries[1].data, []byte(`":"`), []byte(`": "`), 1)}, entries[2]),
			wantErr: ErrDamaged, inOpen: true, wantText: "package is damaged: manifest.sig is not in the form keel writes"},
		{name: "unknown manifest field", data: withManifest(signedJSON(func(v map[string]any) { v["channel"] = "beta" }), payload),
			wantErr: ErrManifest, inOpen: true, wantText: `manifest is invalid: json: unknown field "channel"`},
		{name: "newer manifest format", data: withManifest(signedJSON(func(v map[string]any) { v["format"] = 2 }), payload),
			wantErr: ErrManifest, inOpen: true, wantText: "manifest is invalid: format 2 is newer than this reader understands"},
		{name: "version not semver", data: withManifest(signedJSON(func(v map[string]any) { v["version"] = "v1.2" }), payload),
			wantErr: ErrManifest, inOpen: true, wantText: `manifest is invalid: version "v1.2"`},
		{name: "unknown kind", data: withManifest(signedJSON(func(v map[string]any) { v["kind"] = "firmware" }), payload),
			wantErr: ErrManifest, inOpen: true, wantText: `manifest is invalid: kind "firmware"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := trusted
			if tc.trusted != nil {
				tr = tc.trusted
			}
			_, _, openFailed, err := openAll(tc.data, tr)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("error %q does not wrap %q", err, tc.wantErr)
			}
			if openFailed != tc.inOpen {
				t.Errorf("failed in Open: %v, want %v (%v)", openFailed, tc.inOpen, err)
			}
			if !strings.HasPrefix(err.Error(), tc.wantText) {
				t.Errorf("error %q\ndoes not begin %q", err, tc.wantText)
			}
		})
	}
}

// countingReader counts what Open consumes.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

// Open must decide on the signature with no payload byte read, and must
// not read an oversized manifest at all.
func TestOpenReadsNoPayload(t *testing.T) {
	key := testKey(1)
	data := buildPackage(t, testManifest(), testPayload(5000), key)
	cr := &countingReader{r: bytes.NewReader(data)}
	if _, err := Open(cr, []ed25519.PublicKey{pub(key)}); err != nil {
		t.Fatal(err)
	}
	if payloadAt := len(data) - 1024 - 5120; cr.n != payloadAt {
		t.Fatalf("Open read %d bytes; the payload starts at %d", cr.n, payloadAt)
	}

	big := rawPackage(t, entry{name: manifestEntry, data: make([]byte, 10<<20)})
	cr = &countingReader{r: bytes.NewReader(big)}
	if _, err := Open(cr, []ed25519.PublicKey{pub(key)}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("oversized manifest: %v", err)
	}
	if cr.n > tarstream.BlockSize {
		t.Fatalf("Open read %d bytes of an oversized manifest", cr.n)
	}
}

// An error of the underlying reader (a dropped connection) is reported as
// itself, not as a damaged or truncated package.
func TestReaderErrorsPassThrough(t *testing.T) {
	key := testKey(1)
	data := buildPackage(t, testManifest(), testPayload(5000), key)
	reset := errors.New("connection reset by peer")
	for _, at := range []int{0, 100, 600, 1600, 3000, len(data) - 600, len(data) - 10} {
		r := io.MultiReader(bytes.NewReader(data[:at]), iotest.ErrReader(reset))
		p, err := Open(r, []ed25519.PublicKey{pub(key)})
		if err == nil {
			_, err = io.Copy(io.Discard, p.Payload())
		}
		if !errors.Is(err, reset) || errors.Is(err, ErrDamaged) || errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d: %v", at, err)
		}
	}
}

// Every proper prefix of a package fails as truncated, in Open or in the
// payload, and the payload stream never ends cleanly.
func TestTruncatedAnywhere(t *testing.T) {
	t.Parallel()
	key := testKey(1)
	data := buildPackage(t, testManifest(), testPayload(700), key)
	for cut := 0; cut < len(data); cut++ {
		_, _, _, err := openAll(data[:cut], []ed25519.PublicKey{pub(key)})
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("cut at %d of %d: %v", cut, len(data), err)
		}
	}
}

// The mismatch comes with the last payload bytes, so io.Copy reports it;
// io.ReadFull of exactly the size drops an error that comes with the last
// bytes, so Verified must report it afterwards.
func TestPayloadMismatchComesWithLastBytes(t *testing.T) {
	key := testKey(1)
	data := buildPackage(t, testManifest(), testPayload(1000), key)
	data[len(data)-1024-24-1] ^= 1 // last payload byte; 1000 pads to 1024
	p, err := Open(bytes.NewReader(data), []ed25519.PublicKey{pub(key)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(p.Payload(), make([]byte, 1000)); err != nil {
		t.Fatalf("ReadFull of the payload's size: %v (io.ReadFull has changed)", err)
	}
	if err := p.Verified(); !errors.Is(err, ErrPayload) {
		t.Fatalf("Verified: %v", err)
	}
	if _, err := p.Payload().Read(make([]byte, 1)); !errors.Is(err, ErrPayload) {
		t.Fatalf("a read after the failure: %v", err)
	}
	p, _ = Open(bytes.NewReader(data), []ed25519.PublicKey{pub(key)})
	if _, err := io.Copy(io.Discard, p.Payload()); !errors.Is(err, ErrPayload) {
		t.Fatalf("io.Copy: %v", err)
	}
}

func TestVerifiedBeforeTheEnd(t *testing.T) {
	key := testKey(1)
	data := buildPackage(t, testManifest(), testPayload(1000), key)
	p, err := Open(bytes.NewReader(data), []ed25519.PublicKey{pub(key)})
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(p.Payload(), make([]byte, 10))
	if err := p.Verified(); err == nil || err.Error() != "payload is not verified: 10 of 1000 bytes were read" {
		t.Fatalf("Verified after 10 bytes: %v", err)
	}
}

// Every single-bit flip outside the payload is refused, except in bytes
// no reader interprets (tar padding, a checksum's terminator); none of
// those can change the manifest or the payload handed out. Every flip in
// the payload is caught.
func TestBitFlips(t *testing.T) {
	t.Parallel()
	key := testKey(1)
	payload := testPayload(700)
	data := buildPackage(t, testManifest(), payload, key)
	orig, _, _, err := openAll(data, []ed25519.PublicKey{pub(key)})
	if err != nil {
		t.Fatal(err)
	}
	payloadAt := len(data) - 1024 - 1024
	accepted := 0
	for off := 0; off < len(data); off++ {
		if off >= payloadAt && off < payloadAt+len(payload) && off%37 != 0 {
			continue // sample the payload; its bytes all go through one hash
		}
		for bit := 0; bit < 8; bit++ {
			c := bytes.Clone(data)
			c[off] ^= 1 << bit
			p, got, _, err := openAll(c, []ed25519.PublicKey{pub(key)})
			if err != nil {
				continue
			}
			accepted++
			if !bytes.Equal(p.ManifestJSON, orig.ManifestJSON) || !bytes.Equal(got, payload) {
				t.Fatalf("flip at byte %d bit %d changed the content and was accepted", off, bit)
			}
			if off >= payloadAt {
				t.Fatalf("flip at byte %d bit %d, in or after the payload, was accepted", off, bit)
			}
		}
	}
	t.Logf("%d harmless flips accepted (padding of the manifest and signature entries)", accepted)
}
