package coldplug

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func (fs *fakeSystem) concurrentLoader(workers int) *Loader {
	fs.t.Helper()
	l, err := New(Options{Root: fs.root, Release: testRelease, Insert: fs.insert, Workers: workers})
	if err != nil {
		fs.t.Fatal(err)
	}
	return l
}

// checkLoads fails the test if a module was inserted twice, or began loading
// before one of its dependencies or soft "pre" dependencies had finished.
func checkLoads(t *testing.T, fs *fakeSystem, l *Loader) {
	t.Helper()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, m := range fs.inserted {
		if n := fs.calls[m]; n != 1 {
			t.Errorf("%s: insert called %d times", m, n)
		}
		before := slices.Clone(l.ix.deps[m])
		for _, s := range l.ix.softPre[m] {
			before = append(before, l.ix.lookup(s)...)
		}
		for _, d := range before {
			end, ok := fs.ended[d]
			if !ok {
				continue // in the kernel already, or failed
			}
			if end.After(fs.started[m]) {
				t.Errorf("%s started %v before its dependency %s finished",
					m, end.Sub(fs.started[m]), d)
			}
		}
	}
}

func TestConcurrentColdplugOrdersDependencies(t *testing.T) {
	fs := newFakeSystem(t)
	fs.delay["virtio"] = 20 * time.Millisecond
	fs.delay["virtio_pci"] = 30 * time.Millisecond
	fs.delay["failover"] = 20 * time.Millisecond
	// e1000 probes slowly, as ahci does resetting SATA links.
	fs.delay["e1000"] = 200 * time.Millisecond
	l := fs.concurrentLoader(4)
	loaded, err := l.Coldplug(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkLoads(t, fs, l)
	want := []string{"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci",
		"e1000", "failover", "net_failover", "virtio_net", "virtio_blk"}
	if !sameSet(loaded, want) {
		t.Errorf("loaded %v, want %v in any order", loaded, want)
	}
	if !slices.Equal(l.Loaded(), loaded) {
		t.Errorf("Loaded() = %v, Coldplug returned %v", l.Loaded(), loaded)
	}
	fs.mu.Lock()
	if fs.maxActive < 2 || fs.maxActive > 4 {
		t.Errorf("%d modules loading at once, want 2 to 4", fs.maxActive)
	}
	// Round one's drivers loaded side by side: virtio_pci and its
	// dependencies while e1000 was probing.
	if !fs.ended["virtio_pci"].Before(fs.ended["e1000"]) {
		t.Errorf("virtio_pci finished %v after e1000", fs.ended["virtio_pci"].Sub(fs.ended["e1000"]))
	}
	fs.mu.Unlock()

	failed := l.Failed()
	if !errors.Is(failed["broken"], unix.ENOEXEC) || !errors.Is(failed["needs_broken"], unix.ENOEXEC) {
		t.Errorf("failures %v, want broken and needs_broken with ENOEXEC", failed)
	}
	if !errors.Is(failed["button"], ErrUnknown) {
		t.Errorf("button: %v, want ErrUnknown", failed["button"])
	}
	again, err := l.Coldplug(context.Background())
	if err != nil || len(again) != 0 {
		t.Errorf("second coldplug: loaded %v err %v", again, err)
	}
	if n := fs.calls["broken"]; n != 1 {
		t.Errorf("broken tried %d times", n)
	}
}

func TestWorkersBoundConcurrentInserts(t *testing.T) {
	fs := newFakeSystem(t)
	// Eight independent drivers for eight devices.
	dep, alias := modulesDep, modulesAlias
	for i := range 8 {
		dep += fmt.Sprintf("kernel/drivers/misc/drv%d.ko:\n", i)
		alias += fmt.Sprintf("alias platform:dev%d drv%d\n", i, i)
		fs.device(fmt.Sprintf("platform/dev%d", i), fmt.Sprintf("platform:dev%d", i))
		fs.delay[fmt.Sprintf("drv%d", i)] = 20 * time.Millisecond
	}
	dir := filepath.Join(fs.root, "lib", "modules", testRelease)
	fs.write(filepath.Join(dir, "modules.dep"), dep)
	fs.write(filepath.Join(dir, "modules.alias"), alias)
	l := fs.concurrentLoader(2)
	if _, err := l.Coldplug(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkLoads(t, fs, l)
	if fs.maxActive != 2 {
		t.Errorf("%d modules loading at once with 2 workers", fs.maxActive)
	}
	for i := range 8 {
		if !slices.Contains(fs.inserted, fmt.Sprintf("drv%d", i)) {
			t.Errorf("drv%d not loaded: %v", i, fs.inserted)
		}
	}
}

// Load calls racing each other and Coldplug for the same modules share one
// insertion each and all see its outcome.
func TestConcurrentLoadsShareModules(t *testing.T) {
	fs := newFakeSystem(t)
	for _, m := range []string{"crc32c_generic", "jbd2", "ext4", "virtio", "failover", "virtio_net"} {
		fs.delay[m] = 20 * time.Millisecond
	}
	fs.delay["broken"] = 30 * time.Millisecond
	l := fs.concurrentLoader(4)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(map[string][]error)
	var mu sync.Mutex
	for range 4 {
		for _, name := range []string{"ext4", "fs-ext4", "virtio_net", "needs_broken", "crc32c"} {
			wg.Go(func() {
				err := l.Load(ctx, name)
				mu.Lock()
				errs[name] = append(errs[name], err)
				mu.Unlock()
			})
		}
	}
	wg.Go(func() {
		if _, err := l.Coldplug(ctx); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	checkLoads(t, fs, l)
	for name, es := range errs {
		for _, err := range es {
			if name == "needs_broken" {
				if !errors.Is(err, unix.ENOEXEC) {
					t.Errorf("Load(%s) = %v, want ENOEXEC", name, err)
				}
			} else if err != nil {
				t.Errorf("Load(%s) = %v", name, err)
			}
		}
	}
	for _, m := range []string{"ext4", "jbd2", "crc32c_generic", "virtio_net", "virtio_blk", "e1000"} {
		if !slices.Contains(fs.inserted, m) {
			t.Errorf("%s not loaded: %v", m, fs.inserted)
		}
	}
	if n := fs.calls["broken"]; n != 1 {
		t.Errorf("broken tried %d times", n)
	}
}

// A soft dependency cycle must neither deadlock nor load a module twice,
// whichever end two concurrent Loads start from.
func TestConcurrentSoftdepCycle(t *testing.T) {
	fs := newFakeSystem(t)
	dir := filepath.Join(fs.root, "lib", "modules", testRelease)
	fs.write(filepath.Join(dir, "modules.dep"), modulesDep+"kernel/a.ko:\nkernel/b.ko:\n")
	fs.write(filepath.Join(dir, "modules.softdep"), modulesSoftdep+"softdep a pre: b\nsoftdep b pre: a\n")
	fs.delay["a"] = 10 * time.Millisecond
	fs.delay["b"] = 10 * time.Millisecond
	for range 20 {
		fs.mu.Lock()
		delete(fs.exist, "a")
		delete(fs.exist, "b")
		fs.calls, fs.inserted = map[string]int{}, nil
		fs.mu.Unlock()
		l := fs.concurrentLoader(4)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var wg sync.WaitGroup
		for _, name := range []string{"a", "b", "a", "b"} {
			wg.Go(func() {
				if err := l.Load(ctx, name); err != nil {
					t.Errorf("Load(%s): %v", name, err)
				}
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			t.Fatal("deadlock")
		}
		cancel()
		// One of the two necessarily loads before the other: only
		// check that neither loaded twice.
		for m, n := range fs.calls {
			if n != 1 {
				t.Errorf("%s: insert called %d times", m, n)
			}
		}
		if !sameSet(fs.inserted, []string{"a", "b"}) {
			t.Fatalf("inserted %v, want a and b once", fs.inserted)
		}
	}
}

// A Coldplug cut short forgets the devices it did not finish, so the next one
// loads their modules.
func TestConcurrentColdplugCancelled(t *testing.T) {
	fs := newFakeSystem(t)
	fs.delay["virtio_pci"] = 100 * time.Millisecond
	l := fs.concurrentLoader(4)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.Coldplug(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Coldplug = %v, want DeadlineExceeded", err)
	}
	if _, err := l.Coldplug(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkLoads(t, fs, l)
	for _, m := range []string{"virtio_pci", "virtio_blk", "virtio_net", "e1000"} {
		if !slices.Contains(fs.inserted, m) {
			t.Errorf("%s not loaded after the second coldplug: %v", m, fs.inserted)
		}
	}
	for m, err := range l.Failed() {
		if canceled(err) {
			t.Errorf("%s recorded as failed by the cancellation: %v", m, err)
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// With a subscription, the drivers of the devices one driver revealed load
// as soon as it finished, not after the slowest driver of the same walk
// (ahci probing its ports held virtio_blk back by 0.4 s in every boot).
func TestRevealedDevicesDoNotWaitForTheSlowestDriver(t *testing.T) {
	fs := newFakeSystem(t)
	fs.events, fs.eventsOnly = &fakeEvents{}, true
	fs.delay["e1000"] = 400 * time.Millisecond // the slow probe
	l, err := New(Options{Root: fs.root, Release: testRelease, Insert: fs.insert, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	l.sub = fs.events
	loaded, err := l.Coldplug(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"virtio_blk", "virtio_net", "e1000"} {
		if !slices.Contains(loaded, m) {
			t.Fatalf("loaded %v: no %s", loaded, m)
		}
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if !fs.started["virtio_blk"].Before(fs.ended["e1000"]) {
		t.Errorf("virtio_blk started %v after e1000 (the slow driver) ended", fs.started["virtio_blk"].Sub(fs.ended["e1000"]))
	}
}
