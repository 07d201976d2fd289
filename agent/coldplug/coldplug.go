// Package coldplug loads the kernel modules the machine's hardware needs, as
// udev would at boot, for an initramfs with no udev and no modprobe.
//
// The initramfs ships lib/modules/<release>/ with a modules.dep,
// modules.alias and modules.softdep generated at build time. Coldplug reads
// them once, reads the modalias of every device under /sys/devices, loads
// the modules whose alias patterns match (dependencies first, with
// finit_module), and rescans until no new module loads: loading virtio_pci
// makes the virtio devices appear, whose modaliases then ask for virtio_blk
// and virtio_net. Load loads a module by name or alias for the things that
// have no device (ext4, squashfs, vfat…). Watch keeps doing the same for
// devices that appear later.
package coldplug

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrUnknown means no module has that name or an alias matching it.
var ErrUnknown = errors.New("no such module")

// InsertFunc loads one module file into the kernel. It returns an error
// wrapping unix.EEXIST when the module is already loaded.
type InsertFunc func(file string) error

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
}

// Loader loads modules from one kernel's module directory. It is safe for
// concurrent use (Watch runs beside the agent's own Load calls).
type Loader struct {
	root      string
	insertFn  InsertFunc
	log       *slog.Logger
	maxRounds int
	ix        *index

	mu       sync.Mutex
	loaded   map[string]bool  // in the kernel, by us or before us
	failed   map[string]error // not retried: a broken module stays broken
	loading  map[string]bool  // on the current load path (softdep cycles)
	handled  map[string]bool  // modaliases already matched
	inserted []string         // modules this Loader inserted, in order
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
		ix:        ix,
		loaded:    make(map[string]bool),
		failed:    make(map[string]error),
		loading:   make(map[string]bool),
		handled:   make(map[string]bool),
	}
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

// Coldplug loads modules for every device in sysfs, rescanning after each
// round that loaded something, and returns the modules it inserted.
func (l *Loader) Coldplug(ctx context.Context) ([]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := time.Now()
	first, failedBefore := len(l.inserted), len(l.failed)
	rounds := 0
	for rounds < l.maxRounds {
		rounds++
		aliases, err := scanModaliases(filepath.Join(l.root, "sys", "devices"))
		if err != nil {
			return l.since(first), fmt.Errorf("coldplug: %w", err)
		}
		before := len(l.inserted)
		for _, a := range aliases {
			if err := ctx.Err(); err != nil {
				return l.since(first), fmt.Errorf("coldplug: %w", err)
			}
			l.handleModalias(ctx, a)
		}
		if len(l.inserted) == before {
			break
		}
	}
	loaded := l.since(first)
	l.log.Info("coldplug done", "modules", len(loaded), "rounds", rounds,
		"failed", len(l.failed)-failedBefore, "took", time.Since(start).Round(time.Millisecond))
	return loaded, nil
}

// since returns a copy of the modules inserted after the first n.
func (l *Loader) since(n int) []string {
	return append([]string(nil), l.inserted[n:]...)
}

// handleModalias loads every module matching a device's modalias once.
func (l *Loader) handleModalias(ctx context.Context, modalias string) {
	if l.handled[modalias] {
		return
	}
	l.handled[modalias] = true
	for _, m := range l.ix.lookup(modalias) {
		// Logged inside; one driver failing must not keep the others
		// from binding.
		_ = l.loadModule(ctx, m)
	}
	if ctx.Err() != nil {
		delete(l.handled, modalias) // interrupted: the next scan retries
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
	defer l.mu.Unlock()
	return l.loadName(ctx, name)
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

func (l *Loader) loadName(ctx context.Context, name string) error {
	mods := l.ix.lookup(name)
	if len(mods) == 0 {
		if l.ix.builtin[modName(name)] {
			return nil
		}
		return fmt.Errorf("load %s: %w", name, ErrUnknown)
	}
	var errs []error
	for _, m := range mods {
		if err := l.loadModule(ctx, m); err != nil {
			errs = append(errs, err)
		}
	}
	// An alias several modules provide ("crypto-crc32c": the generic one
	// and crc32c_intel, which needs SSE4.2) is there if any of them loaded.
	if len(errs) < len(mods) {
		return nil
	}
	return errors.Join(errs...)
}

// loadModule loads m after its soft "pre" dependencies and its dependencies,
// then its soft "post" dependencies, as modprobe does.
func (l *Loader) loadModule(ctx context.Context, m string) error {
	if l.loaded[m] {
		return nil
	}
	if err := l.failed[m]; err != nil {
		return err
	}
	if l.loading[m] {
		return nil // a softdep cycle; the outer call finishes the job
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("load %s: %w", m, err)
	}
	l.loading[m] = true
	defer delete(l.loading, m)

	// Soft dependencies are optional: modprobe goes on without them.
	for _, s := range l.ix.softPre[m] {
		if err := l.loadName(ctx, s); err != nil {
			l.log.Debug("soft dependency not loaded", "module", m, "softdep", s, "err", err)
		}
	}
	deps := l.ix.deps[m]
	for i := len(deps) - 1; i >= 0; i-- {
		if err := l.loadModule(ctx, deps[i]); err != nil {
			err = fmt.Errorf("load %s: dependency %s: %w", m, deps[i], err)
			if ctx.Err() == nil {
				l.failed[m] = err
			}
			return err
		}
	}
	if err := l.insert(m); err != nil {
		return err
	}
	for _, s := range l.ix.softPost[m] {
		if err := l.loadName(ctx, s); err != nil {
			l.log.Debug("soft dependency not loaded", "module", m, "softdep", s, "err", err)
		}
	}
	return nil
}

// insert puts one module into the kernel, treating "already there" as done.
func (l *Loader) insert(m string) error {
	rel, ok := l.ix.files[m]
	if !ok {
		if l.ix.builtin[m] {
			l.loaded[m] = true
			return nil
		}
		err := fmt.Errorf("load %s: not in modules.dep: %w", m, ErrUnknown)
		l.failed[m] = err
		return err
	}
	// /sys/module/<m>/initstate exists for loaded modules only; checking
	// it spares the kernel reading and verifying a signed module it will
	// refuse with EEXIST.
	if _, err := os.Stat(filepath.Join(l.root, "sys", "module", m, "initstate")); err == nil {
		l.loaded[m] = true
		return nil
	}
	start := time.Now()
	err := l.insertFn(filepath.Join(l.ix.dir, filepath.FromSlash(rel)))
	switch {
	case errors.Is(err, unix.EEXIST):
		l.loaded[m] = true
		return nil
	case err != nil:
		err = fmt.Errorf("load %s: %w", m, err)
		l.failed[m] = err
		if errors.Is(err, unix.ENODEV) {
			// The module's init found nothing to drive: an alias
			// that also matches hardware it rejects, crc32c_intel
			// on a CPU without SSE4.2, efivarfs without EFI.
			l.log.Debug("module found no device", "module", m, "err", err)
		} else {
			l.log.Warn("module failed to load", "module", m, "err", err)
		}
		return err
	}
	l.loaded[m] = true
	l.inserted = append(l.inserted, m)
	l.log.Debug("module loaded", "module", m, "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// finitModule loads a module file with finit_module(2), so the kernel reads
// the file itself (and can check its signature against the file).
func finitModule(file string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		return fmt.Errorf("finit_module %s: %w", strings.TrimSuffix(filepath.Base(file), ".ko"), err)
	}
	return nil
}
