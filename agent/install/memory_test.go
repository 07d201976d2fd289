package install

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/image/kpkg"
)

// generated is a large deterministic payload that costs no memory.
type generated struct {
	pattern   []byte
	size, off int64
}

func newGenerated(size int64) *generated {
	return &generated{pattern: payload(64<<10, 11), size: size}
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

// Installing a 256 MiB package streamed from the vendor's writer keeps the
// heap flat: the payload passes through one buffer to the slot and back.
func TestMemoryDoesNotGrowWithPackage(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	e := newEnv(t)
	// A sparse slot file large enough for the payload.
	if err := os.Truncate(e.slot["b"], size+1<<20); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(kpkg.Write(pw, manifest("1.2.0"), newGenerated(size), vendorKey)) }()
	start := time.Now()
	j, err := e.in.Start(context.Background(), pr, Options{RebootLater: true})
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	const limit = 8 << 20
	growth := int64(peak.Load()) - int64(before.HeapInuse)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB installed in %v: heap in use grew by at most %d KiB; %d KiB allocated in all", size>>20, elapsed.Round(time.Millisecond), growth>>10, allocated>>10)
	if growth > limit || allocated > limit {
		t.Fatalf("memory grows with the package: heap in use +%d KiB, allocated %d KiB (limit %d KiB)", growth>>10, allocated>>10, limit>>10)
	}
	if s := j.Status(); s.State != Done || e.state().B.Version != "1.2.0" {
		t.Errorf("job %+v", s)
	}
}
