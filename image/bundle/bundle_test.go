package bundle

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/kpkg"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

var key = testKey(1)

func trusted() []ed25519.PublicKey { return []ed25519.PublicKey{key.Public().(ed25519.PublicKey)} }

// demoBundle makes the bundle of the demo plan: real signed packages.
func demoBundle(t testing.TB) (Meta, [][]byte) {
	t.Helper()
	meta := Meta{Serial: "KX1-0001", Created: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	var files [][]byte
	for i, p := range []struct {
		kind          kpkg.Kind
		name, version string
	}{{kpkg.KindBase, "keel", "1.1.0"}, {kpkg.KindApp, "demo", "1.1.0"}, {kpkg.KindApp, "demo", "2.0.0"}, {kpkg.KindApp, "demo", "2.0.1"}} {
		var b bytes.Buffer
		m := kpkg.Manifest{Kind: p.kind, Name: p.name, Version: kpkg.MustParseVersion(p.version)}
		if err := kpkg.Write(&b, m, bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 3000+i*700)), key); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b.Bytes())
		meta.Packages = append(meta.Packages, Entry{Kind: p.kind, Name: p.name, Version: m.Version,
			File: fmt.Sprintf("%s-%s-%s.kpkg", p.name, p.kind, p.version), Size: int64(b.Len()), SHA256: hex.EncodeToString(sum[:])})
		files = append(files, b.Bytes())
	}
	return meta, files
}

func write(t testing.TB, meta Meta, files [][]byte) []byte {
	t.Helper()
	var rs []io.Reader
	for _, f := range files {
		rs = append(rs, bytes.NewReader(f))
	}
	var out bytes.Buffer
	if err := Write(&out, meta, rs); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestRoundTripInstallsAsPackages(t *testing.T) {
	meta, files := demoBundle(t)
	b := write(t, meta, files)
	if n, err := Size(meta); err != nil || n != int64(len(b)) {
		t.Errorf("Size says %d (%v); Write wrote %d", n, err, len(b))
	}
	if !IsBundle(b[:512]) {
		t.Error("IsBundle does not know a bundle")
	}
	if IsBundle(files[0][:512]) || IsBundle(b[:100]) || IsBundle(make([]byte, 512)) {
		t.Error("IsBundle takes a package, a short read or zeros for a bundle")
	}

	r, err := Open(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if r.Meta.Serial != "KX1-0001" || len(r.Meta.Packages) != 4 || !r.Meta.Created.Equal(meta.Created) {
		t.Errorf("meta: %+v", r.Meta)
	}
	var order []string
	for {
		e, pr, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, e.String())
		// As the appliance does: each package is opened and verified as
		// it streams out of the bundle.
		p, err := kpkg.Open(pr, trusted())
		if err != nil {
			t.Fatalf("%s: %v", e, err)
		}
		if _, err := io.Copy(io.Discard, p.Payload()); err != nil || p.Verified() != nil {
			t.Fatalf("%s: %v", e, err)
		}
		if p.Manifest.Version.Compare(e.Version) != 0 {
			t.Errorf("%s holds %s", e, p.Manifest.Version)
		}
	}
	if got := strings.Join(order, ", "); got != "base keel 1.1.0, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1" {
		t.Errorf("order: %s", got)
	}
	if _, _, err := r.Next(); err != io.EOF {
		t.Errorf("Next after the end: %v", err)
	}
}

func TestReaderRefusesDamage(t *testing.T) {
	meta, files := demoBundle(t)
	good := write(t, meta, files)

	readAll := func(b []byte) error {
		r, err := Open(bytes.NewReader(b))
		if err != nil {
			return err
		}
		for {
			_, pr, err := r.Next()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if _, err := io.Copy(io.Discard, pr); err != nil {
				return err
			}
		}
	}
	if err := readAll(good); err != nil {
		t.Fatal(err)
	}

	// One byte of the third package changed.
	damaged := bytes.Clone(good)
	off := bytes.Index(damaged, files[2]) + len(files[2]) - 1500
	damaged[off] ^= 1
	err := readAll(damaged)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "demo-app-2.0.0.kpkg has SHA-256") {
		t.Errorf("a changed byte: %v", err)
	}

	for _, cut := range []int{0, 700, len(good) / 2, len(good) - 1024} {
		if err := readAll(good[:cut]); !errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d of %d: %v", cut, len(good), err)
		}
	}

	// bundle.json followed by more JSON (of the same length, so the
	// archive stays well-formed).
	trailing := bytes.Replace(good, []byte("\n  ]\n}\n"), []byte("\n  ]}{}\n"), 1)
	if bytes.Equal(trailing, good) {
		t.Fatal("bundle.json does not end as expected")
	}
	if _, err := Open(bytes.NewReader(trailing)); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "bundle.json") {
		t.Errorf("data after bundle.json's object: %v", err)
	}

	// A package on its own is not a bundle.
	if _, err := Open(bytes.NewReader(files[0])); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "is it a package?") {
		t.Errorf("a package: %v", err)
	}

	// bundle.json lists packages in another order than the archive holds.
	swapped := meta
	swapped.Packages = append([]Entry(nil), meta.Packages...)
	swapped.Packages[0], swapped.Packages[1] = swapped.Packages[1], swapped.Packages[0]
	b := write(t, swapped, [][]byte{files[1], files[0], files[2], files[3]})
	b = bytes.Replace(b, []byte(`"file": "demo-app-1.1.0.kpkg"`), []byte(`"file": "demo-app-1.1.1.kpkg"`), 1)
	if err := readAll(b); !errors.Is(err, ErrDamaged) {
		t.Errorf("a member out of place: %v", err)
	}

	// A member the bundle does not list, after the last package.
	// (A package is a tar stream itself: its members follow the third
	// package where the end-of-archive marker belongs.)
	three := write(t, Meta{Serial: "KX1-0001", Packages: meta.Packages[:3]}, files[:3])
	joined := append(bytes.Clone(three[:len(three)-1024]), files[3]...)
	if err := readAll(joined); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "data follows the last package") {
		t.Errorf("an extra member: %v", err)
	}
}

// The appliance may stop reading a package where the package ends (kpkg
// reads no further than its own end-of-archive marker); Next still checks
// what it did not read, and a mismatch comes out of the next call.
func TestNextChecksWhatTheCallerLeft(t *testing.T) {
	meta, files := demoBundle(t)
	b := write(t, meta, files)
	r, err := Open(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if _, pr, err := r.Next(); err != nil {
		t.Fatal(err)
	} else if _, err := pr.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if e, _, err := r.Next(); err != nil || e.Version.String() != "1.1.0" || e.Kind != kpkg.KindApp {
		t.Fatalf("after a package read in part: %v %v", e, err)
	}

	// A byte changed near the end of the first package, which the caller
	// does not read.
	damaged := bytes.Clone(b)
	damaged[bytes.Index(damaged, files[0])+len(files[0])-100] ^= 1
	r, err = Open(bytes.NewReader(damaged))
	if err != nil {
		t.Fatal(err)
	}
	if _, pr, err := r.Next(); err != nil {
		t.Fatal(err)
	} else if _, err := pr.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Next(); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "keel-base-1.1.0.kpkg has SHA-256") {
		t.Fatalf("after a damaged package read in part: %v", err)
	}

	meta.Packages[0].SHA256 = strings.Repeat("0", 64)
	var out bytes.Buffer
	w := Write(&out, meta, []io.Reader{bytes.NewReader(files[0]), bytes.NewReader(files[1]), bytes.NewReader(files[2]), bytes.NewReader(files[3])})
	if w == nil || !strings.Contains(w.Error(), "the release changed; make the bundle again") {
		t.Errorf("Write of a file that does not match: %v", w)
	}
}

func TestWriteRefuses(t *testing.T) {
	meta, files := demoBundle(t)
	for name, c := range map[string]struct {
		edit func(m *Meta)
		want string
	}{
		"no serial":   {func(m *Meta) { m.Serial = "" }, "names no appliance serial"},
		"no packages": {func(m *Meta) { m.Packages = nil }, "holds no packages"},
		"a path":      {func(m *Meta) { m.Packages[0].File = "../x.kpkg" }, "is not a plain name"},
		"twice":       {func(m *Meta) { m.Packages[1].File = m.Packages[0].File }, "is listed twice"},
	} {
		m := meta
		m.Packages = append([]Entry(nil), meta.Packages...)
		c.edit(&m)
		var rs []io.Reader
		for _, f := range files[:len(m.Packages)] {
			rs = append(rs, bytes.NewReader(f))
		}
		if err := Write(io.Discard, m, rs); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	short := meta
	if err := Write(io.Discard, short, []io.Reader{bytes.NewReader(files[0][:100]), nil, nil, nil}); err == nil || !strings.Contains(err.Error(), "has 100 bytes") {
		t.Errorf("a short file: %v", err)
	}
}

// generated is a large deterministic file that costs no memory.
type generated struct {
	pattern   []byte
	size, off int64
}

func newGenerated(size int64) *generated {
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = byte(i*31 + i>>9)
	}
	return &generated{pattern: p, size: size}
}

func (g *generated) Read(b []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	if rem := g.size - g.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	n := 0
	for n < len(b) {
		n += copy(b[n:], g.pattern[(g.off+int64(n))%int64(len(g.pattern)):])
	}
	g.off += int64(n)
	return n, nil
}

// Streaming a large bundle from Write through a pipe to Next keeps the
// heap flat: neither side holds a package.
func TestMemoryDoesNotGrowWithPackages(t *testing.T) {
	size := int64(128 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	h := sha256.New()
	io.Copy(h, newGenerated(size))
	meta := Meta{Serial: "KX1-0001", Packages: []Entry{
		{Kind: kpkg.KindBase, Name: "keel", Version: kpkg.MustParseVersion("9.0.0"), File: "keel-base-9.0.0.kpkg", Size: size, SHA256: hex.EncodeToString(h.Sum(nil))},
	}}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(Write(pw, meta, []io.Reader{newGenerated(size)})) }()
	r, err := Open(pr)
	if err != nil {
		t.Fatal(err)
	}
	_, f, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	var peak uint64
	var n int64
	buf := make([]byte, 32<<10)
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if n%(16<<20) < int64(m) {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := r.Next(); err != io.EOF || n != size {
		t.Fatalf("streamed %d of %d bytes: %v", n, size, err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	const limit = 4 << 20
	growth := int64(peak) - int64(before.HeapInuse)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB streamed: heap in use grew by at most %d KiB; %d KiB allocated in all", size>>20, growth>>10, allocated>>10)
	if growth > limit || allocated > limit {
		t.Fatalf("memory grows with the package: heap in use +%d KiB, allocated %d KiB (limit %d KiB)", growth>>10, allocated>>10, limit>>10)
	}
}
