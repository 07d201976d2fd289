package kpkg

import (
	"crypto/ed25519"
	"errors"
	"io"
	"runtime"
	"testing"
)

// generated is a large deterministic payload that costs no memory: a
// 64 KiB pattern repeated, readable and seekable like a file.
type generated struct {
	pattern []byte
	size    int64
	off     int64
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

func (g *generated) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += g.off
	case io.SeekEnd:
		off += g.size
	}
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	g.off = off
	return off, nil
}

// heapWatcher discards what it is given and samples the heap as it goes.
type heapWatcher struct {
	n, next   int64
	peakInuse uint64
}

func (h *heapWatcher) Write(b []byte) (int, error) {
	h.n += int64(len(b))
	if h.n >= h.next {
		h.next += 16 << 20
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.peakInuse = max(h.peakInuse, ms.HeapInuse)
	}
	return len(b), nil
}

// Streaming 256 MiB from a writer through Open to a sink keeps the heap
// flat: neither side holds the payload, and neither allocates per block.
func TestMemoryDoesNotGrowWithPayload(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	key := testKey(1)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(Write(pw, testManifest(), newGenerated(size), key)) }()
	p, err := Open(pr, []ed25519.PublicKey{pub(key)})
	if err != nil {
		t.Fatal(err)
	}
	w := &heapWatcher{}
	if _, err := io.Copy(w, p.Payload()); err != nil {
		t.Fatal(err)
	}
	if err := p.Verified(); err != nil || w.n != size {
		t.Fatalf("streamed %d of %d bytes: %v", w.n, size, err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	const limit = 4 << 20
	growth := int64(w.peakInuse) - int64(before.HeapInuse)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB streamed: heap in use grew by at most %d KiB; %d KiB allocated in all", size>>20, growth>>10, allocated>>10)
	if growth > limit || allocated > limit {
		t.Fatalf("memory grows with the payload: heap in use +%d KiB, allocated %d KiB (limit %d KiB)", growth>>10, allocated>>10, limit>>10)
	}
}
