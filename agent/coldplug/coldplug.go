// Package coldplug loads the kernel modules the machine's hardware needs, as
// udev would at boot, for an initramfs with no udev and no modprobe.
//
// The initramfs ships lib/modules/<release>/ with a modules.dep,
// modules.alias and modules.softdep generated at build time. Coldplug reads
// them once, reads the modalias of every device under /sys/devices, loads
// the modules whose alias patterns match (dependencies first, with
// finit_module), and rescans until no new module loads: loading virtio_pci
// makes the virtio devices appear, whose modaliases then ask for virtio_blk
// and virtio_net. Modules load concurrently, each after its dependencies:
// most of a slow load is a driver's probe waiting for hardware (ahci
// resetting SATA links), which need not hold up the other drivers. Load
// loads a module by name or alias for the things that have no device (ext4,
// squashfs, vfat…). Watch keeps doing the same for devices that appear
// later.
package coldplug

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnknown means no module has that name or an alias matching it.
var ErrUnknown = errors.New("no such module")

// InsertFunc loads one module file into the kernel with the given
// parameters ("" or "async_probe"). It returns an error wrapping
// unix.EEXIST when the module is already loaded.
type InsertFunc func(file, params string) error

// Options configure a Loader. The zero value is right for PID 1.
type Options struct {
	// Root is the file system root holding lib/modules and sys. Empty
	// means "/"; tests point it at a fake tree.
	Root string
	// Release is the kernel release; empty means uname -r.
	Release string
	// Insert loads a module file; nil means finit_module(2).
	Insert InsertFunc
	// Logger receives one line per module (debug) and a summary (info).
	Logger *slog.Logger
	// MaxRounds bounds the sysfs rescans of one Coldplug; 0 means 8. A
	// chain of drivers revealing buses is rarely deeper than three.
	MaxRounds int
	// Workers bounds how many modules are being inserted at once. 0 means
	// 4 with finit_module: the kernel serialises what it must, and the
	// rest of a slow load is mostly a probe sleeping on hardware. With a
	// custom Insert, 0 means 1, which also keeps the load order
	// deterministic: Insert used to be called from one goroutine only, and
	// callers that append to a slice without a lock need not change.
	Workers int
}

// Loader loads modules from one kernel's module directory. It is safe for
// concurrent use (Watch runs beside the agent's own Load calls).
type Loader struct {
	root      string
	insertFn  InsertFunc
	log       *slog.Logger
	maxRounds int
	workers   int
	ix        *index
	// sem holds a token per insertFn call in progress, across all callers.
	// Jobs take it only once their dependencies are done, and insertFn
	// waits for no job, so it cannot deadlock.
	sem chan struct{}

	mu       sync.Mutex
	loaded   map[string]bool  // in the kernel, by us or before us
	failed   map[string]error // not retried: a broken module stays broken
	jobs     map[string]*job  // being loaded now, by whichever caller
	handled  map[string]bool  // modaliases already matched
	inserted []string         // modules this Loader inserted, in order
	sub      eventSource      // Subscribe's, until Watch takes it
	hold     string           // HoldStorage's boot controller, "" when not holding
	held     []device         // devices whose storage drivers are held back
}

// New reads the module index of the running kernel (or opts.Release).
func New(opts Options) (*Loader, error) {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	release := opts.Release
	if release == "" {
		var uts unix.Utsname
		if err := unix.Uname(&uts); err != nil {
			return nil, fmt.Errorf("uname: %w", err)
		}
		release = unix.ByteSliceToString(uts.Release[:])
	}
	ix, err := readIndex(filepath.Join(root, "lib", "modules", release))
	if err != nil {
		return nil, err
	}
	l := &Loader{
		root:      root,
		insertFn:  opts.Insert,
		log:       opts.Logger,
		maxRounds: opts.MaxRounds,
		workers:   opts.Workers,
		ix:        ix,
		loaded:    make(map[string]bool),
		failed:    make(map[string]error),
		jobs:      make(map[string]*job),
		handled:   make(map[string]bool),
	}
	if l.workers <= 0 {
		l.workers = 1
		if l.insertFn == nil {
			l.workers = 4
		}
	}
	l.sem = make(chan struct{}, l.workers)
	if l.insertFn == nil {
		l.insertFn = finitModule
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if l.maxRounds <= 0 {
		l.maxRounds = 8
	}
	return l, nil
}

// Coldplug is the boot-time entry point: it loads the modules for all
// devices present under root (normally "/") and returns their names in load
// order. Modules that fail are logged and skipped; the error is non-nil only
// when the module index or sysfs cannot be read.
func Coldplug(ctx context.Context, logger *slog.Logger, root string) ([]string, error) {
	l, err := New(Options{Root: root, Logger: logger})
	if err != nil {
		return nil, err
	}
	return l.Coldplug(ctx)
}

// Coldplug loads modules for every device in sysfs and returns the modules
// it inserted, in the order they finished loading. A round's modules load
// concurrently, each after its dependencies. After a round that loaded
// something, the next round matches the devices those drivers revealed:
// with Subscribe, the add events queued meanwhile (sysfs is walked once);
// without, a new walk of sysfs, which costs 150-450 ms of an emulated CPU
// each time. Rescanning as soon as any driver finished (so virtio_blk would
// load while ahci is still probing) was measured to be slower still: fast
// drivers (button, evdev) trigger scans that find nothing.
func (l *Loader) Coldplug(ctx context.Context) ([]string, error) {
	start := time.Now()
	var (
		loaded  []*job
		failed  int
		planned []string // modaliases this call marked handled
		rounds  int
		rescan  bool // events were lost: the next round walks sysfs
		err     error
	)
	for rounds < l.maxRounds {
		rounds++
		if err = ctx.Err(); err != nil {
			break
		}
		scanStart := time.Now()
		var devs []device
		devs, err = l.next(rounds, rescan)
		if err != nil {
			break
		}
		jobs, as := l.plan(ctx, devs)
		planned = append(planned, as...)
		l.log.Debug("coldplug scan", "round", rounds, "devices", len(devs), "new", len(as),
			"modules", len(jobs), "took", time.Since(scanStart).Round(time.Millisecond))
		if src := l.subscription(); src != nil && l.workers > 1 {
			more, moreAs, overflow := l.runFollowing(ctx, jobs, src)
			jobs, planned = append(jobs, more...), append(planned, moreAs...)
			rescan = overflow
		} else {
			l.run(ctx, jobs)
		}
		before := len(loaded)
		for _, j := range jobs {
			switch {
			case j.inserted:
				loaded = append(loaded, j)
			case j.err != nil && !canceled(j.err):
				failed++
			}
		}
		if len(loaded) == before {
			break
		}
	}
	// jobs is in plan order; l.inserted is in the order modules finished
	// loading, dependencies first, as the result promises.
	slices.SortFunc(loaded, func(a, b *job) int { return a.seq - b.seq })
	names := make([]string, len(loaded))
	for i, j := range loaded {
		names[i] = j.name
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		// Interrupted: the next scan matches these devices again, which
		// is harmless for the ones whose modules did load.
		l.unhandle(planned)
		return names, fmt.Errorf("coldplug: %w", err)
	}
	l.log.Info("coldplug done", "modules", len(names), "rounds", rounds,
		"failed", failed, "took", time.Since(start).Round(time.Millisecond))
	return names, nil
}

// next returns the devices a round matches: the first walks sysfs; later
// ones take the queued add events of a subscription if there is one
// (walking sysfs again if events were lost, here or, with rescan, while
// the last round's drivers loaded).
func (l *Loader) next(round int, rescan bool) ([]device, error) {
	if src := l.subscription(); src != nil && round > 1 {
		if !rescan {
			as, overflow, err := src.pending()
			if err != nil || !overflow {
				return as, err
			}
		}
		l.log.Warn("uevent overflow, rescanning sysfs")
	}
	return scanDevices(filepath.Join(l.root, "sys"))
}

// followEvery is how often runFollowing looks for new devices while
// drivers load: a non-blocking read of the event socket.
const followEvery = 10 * time.Millisecond

// runFollowing runs jobs and, while any job of this call is still
// loading, plans and starts the modules for the devices that appear
// meanwhile (the add events of src), so virtio_blk loads as soon as
// virtio_pci revealed its disk rather than after the round's slowest
// driver (ahci resetting six SATA links took 0.4 s of every emulated
// boot). It returns when every job it ran is done and no event is
// queued, with the jobs and modaliases it added; overflow says events
// were lost, so the caller walks sysfs again.
func (l *Loader) runFollowing(ctx context.Context, jobs []*job, src eventSource) (more []*job, planned []string, overflow bool) {
	finished := make(chan struct{})
	inflight := 0
	start := func(js []*job) {
		for _, j := range js {
			inflight++
			go func() { l.exec(ctx, j); finished <- struct{}{} }()
		}
	}
	start(jobs)
	tick := time.NewTicker(followEvery)
	defer tick.Stop()
	for {
		select {
		case <-finished:
			inflight--
		case <-tick.C:
		}
		if ctx.Err() == nil {
			as, lost, err := src.pending()
			// Lost events or a broken socket: the caller's next round
			// walks sysfs.
			overflow = overflow || lost || err != nil
			js, pas := l.plan(ctx, as)
			more, planned = append(more, js...), append(planned, pas...)
			start(js)
		}
		if inflight == 0 {
			return more, planned, overflow
		}
	}
}

// plan starts the jobs for the modules matching the devices' modaliases
// not handled yet, and returns them (for the caller to run) and those
// modaliases. Devices whose storage drivers are held back (HoldStorage)
// are kept for ReleaseStorage instead.
func (l *Loader) plan(ctx context.Context, devs []device) ([]*job, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.newPlan()
	var planned []string
	for _, d := range devs {
		if ctx.Err() != nil {
			break
		}
		a := d.alias
		if l.handled[a] {
			continue
		}
		mods := l.ix.lookup(a)
		if l.holds(d, mods) {
			if !slices.Contains(l.held, d) {
				l.held = append(l.held, d)
			}
			continue
		}
		l.handled[a] = true
		planned = append(planned, a)
		// One driver failing must not keep the others from binding:
		// failures are logged and recorded by the jobs.
		p.modules(mods, nil)
	}
	return p.jobs, planned
}

func (l *Loader) unhandle(modaliases []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range modaliases {
		delete(l.handled, a)
	}
}

// handleDevice loads every module matching a device's modalias once.
func (l *Loader) handleDevice(ctx context.Context, d device) {
	jobs, planned := l.plan(ctx, []device{d})
	l.run(ctx, jobs)
	if ctx.Err() != nil {
		l.unhandle(planned) // interrupted: the next scan retries
	}
}

// Load loads a module by name ("ext4", "nls-cp437") or alias ("fs-vfat",
// "crypto-crc32c") with its dependencies and soft dependencies. A module
// that is built in or already loaded is success, and so is an alias of which
// at least one of the modules providing it loaded. An unknown name gives an
// error wrapping ErrUnknown; a module whose init found no hardware, one
// wrapping unix.ENODEV.
func (l *Loader) Load(ctx context.Context, name string) error {
	l.mu.Lock()
	mods := l.ix.lookup(name)
	if len(mods) == 0 {
		builtin := l.ix.builtin[modName(name)]
		l.mu.Unlock()
		if builtin {
			return nil
		}
		return fmt.Errorf("load %s: %w", name, ErrUnknown)
	}
	p := l.newPlan()
	p.named = true
	want := p.modules(mods, nil)
	l.mu.Unlock()

	l.run(ctx, p.jobs)
	// Some of want may be other callers' jobs, still running.
	var errs []error
	for _, j := range want {
		if j == nil {
			continue // already loaded
		}
		<-j.done
		if j.err != nil {
			errs = append(errs, j.err)
		}
	}
	// An alias several modules provide ("crypto-crc32c": the generic one
	// and crc32c_intel, which needs SSE4.2) is there if any of them loaded.
	if len(errs) < len(mods) {
		return nil
	}
	return errors.Join(errs...)
}

// Loaded returns the modules this Loader inserted, in load order.
func (l *Loader) Loaded() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.inserted...)
}

// Failed returns the modules that failed to load and why.
func (l *Loader) Failed() map[string]error {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]error, len(l.failed))
	for k, v := range l.failed {
		out[k] = v
	}
	return out
}

// finitModule loads a module file with finit_module(2), so the kernel reads
// the file itself (and can check its signature against the file).
func finitModule(file, params string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return fmt.Errorf("finit_module %s: %w", strings.TrimSuffix(filepath.Base(file), ".ko"), err)
	}
	return nil
}
