package coldplug

import (
	"context"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// HoldStorage makes Coldplug and Watch hold back the storage drivers
// (storageDrivers) of the devices that are not on the path of dev, a sysfs
// device path such as /devices/pci0000:00/0000:00:03.0: the controller
// the firmware booted from (bootpath). The drivers of dev, of the devices
// below it (its disks) and above it (its bridges), and every driver that
// is not a storage driver load as before; the others wait for
// ReleaseStorage. A boot from NVMe or virtio then neither waits for nor
// spends its CPU on AHCI probing six SATA links (a quarter of a second of
// every emulated boot, where q35 always has that controller).
func (l *Loader) HoldStorage(dev string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hold = strings.TrimSuffix(dev, "/")
}

// Holding reports whether storage drivers are being held back.
func (l *Loader) Holding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hold != ""
}

// ReleaseStorage stops holding storage drivers back and loads those held
// so far, returning the modules it inserted. It runs while the box
// serves, so the modules are inserted at the lowest CPU priority: the
// kernel checks a module's signature, relocates it and runs its init in
// the inserting thread, a third of a second of an emulated CPU for the
// AHCI stack, which the API's first TLS handshakes need more. The devices
// their probes reveal (the disks behind a SATA controller) are Watch's,
// like any device added later.
func (l *Loader) ReleaseStorage(ctx context.Context) []string {
	l.mu.Lock()
	held := l.held
	l.hold, l.held = "", nil
	l.mu.Unlock()
	jobs, planned := l.plan(ctx, held)
	// Each on a goroutine of its own, which atLowPriority may leave to
	// end with its thread.
	var wg sync.WaitGroup
	for _, j := range jobs {
		j.background = true
		wg.Go(func() { l.exec(ctx, j) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		l.unhandle(planned) // interrupted: the next scan retries
	}
	var names []string
	for _, j := range jobs {
		if j.inserted {
			names = append(names, j.name)
		}
	}
	return names
}

// holds reports whether d's modules, mods, wait for ReleaseStorage: one of
// them is a storage driver and d is off the boot controller's path. A
// device whose path is unknown is not held: its disk could be the boot's.
// Called with l.mu held.
func (l *Loader) holds(d device, mods []string) bool {
	if l.hold == "" || d.path == "" || onPath(d.path, l.hold) {
		return false
	}
	for _, m := range mods {
		if storageDriver(l.ix.files[m]) {
			return true
		}
	}
	return false
}

// onPath reports whether the device at path p is dev, below it or above
// it.
func onPath(p, dev string) bool {
	p = strings.TrimSuffix(p, "/")
	return p == dev || strings.HasPrefix(p, dev+"/") || strings.HasPrefix(dev, p+"/")
}

// atLowPriority runs f on a thread of the lowest CPU priority (nice 19),
// then gives the thread its priority back. A thread whose priority cannot
// be restored stays locked to its goroutine, and ends with it.
func atLowPriority(f func() error) error {
	runtime.LockOSThread()
	tid := unix.Gettid()
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, 19); err != nil {
		runtime.UnlockOSThread()
		return f()
	}
	err := f()
	if unix.Setpriority(unix.PRIO_PROCESS, tid, 0) == nil {
		runtime.UnlockOSThread()
	}
	return err
}
