package coldplug

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// job is the loading of one module, shared by every caller that needs the
// module while it is in flight: whoever needs it first creates the job and
// runs it, everyone else waits for done. A module is thus inserted at most
// once however many devices, dependants and Load calls ask for it at once.
type job struct {
	name  string
	after []edge // jobs to wait for before inserting
	done  chan struct{}
	named bool // planned by Load: for no device (see insert)
	// background: inserted at the lowest CPU priority (ReleaseStorage's
	// jobs, which load while the box serves).
	background bool

	// Written before done is closed, read after.
	err      error
	inserted bool // this job put the module into the kernel
	seq      int  // if inserted, its index in Loader.inserted
}

type edgeKind int

const (
	// orderEdge only orders: a softdep "post" module after its owner, and
	// the modules matching one device in modules.alias order, so drivers
	// competing for a device bind in the order modprobe would load them.
	orderEdge edgeKind = iota
	// softEdge is a softdep "pre" module: waited for, but optional, as
	// with modprobe.
	softEdge
	// hardEdge is a modules.dep dependency: its failure fails the job.
	hardEdge
)

type edge struct {
	j    *job
	kind edgeKind
}

// failedJob stands for a module that already failed; it is never run.
func failedJob(m string, err error) *job {
	j := &job{name: m, err: err, done: make(chan struct{})}
	close(j.done)
	return j
}

// plan collects the new jobs of one request: a Coldplug round, a Load, a
// uevent. It is built with l.mu held, so each plan is atomic and a job only
// waits for jobs whose planning finished before its own, in this plan or an
// earlier one: the waits form no cycle.
type plan struct {
	l      *Loader
	jobs   []*job          // new jobs, each after those it waits for
	onPath map[string]bool // modules whose planning is under way
	named  bool            // a Load's plan
}

func (l *Loader) newPlan() *plan {
	return &plan{l: l, onPath: make(map[string]bool)}
}

// modules plans mods (the modules one name stands for), each after the one
// before, the first after first (if not nil). It returns each module's job,
// nil where the module is already loaded.
func (p *plan) modules(mods []string, first *job) []*job {
	out := make([]*job, len(mods))
	prev := first
	for i, m := range mods {
		out[i] = p.module(m, prev)
		if out[i] != nil {
			prev = out[i]
		}
	}
	return out
}

// module returns the job loading m: a new one after its soft "pre"
// dependencies and its dependencies, followed by jobs for its soft "post"
// dependencies, as modprobe loads them. It returns nil when there is nothing
// to wait for: m is loaded, or m's own planning is under way further up (a
// softdep cycle, which that outer call finishes). A new job also waits for
// after, if not nil.
func (p *plan) module(m string, after *job) *job {
	l := p.l
	if l.loaded[m] || p.onPath[m] {
		return nil
	}
	if err := l.failed[m]; err != nil {
		return failedJob(m, err)
	}
	if j := l.jobs[m]; j != nil {
		return j // in flight: planned earlier, here or by another caller
	}
	j := &job{name: m, done: make(chan struct{}), named: p.named}
	l.jobs[m] = j
	p.onPath[m] = true
	defer delete(p.onPath, m)
	if after != nil {
		j.after = append(j.after, edge{after, orderEdge})
	}
	for _, s := range l.ix.softPre[m] {
		for _, sj := range p.name(m, s, nil) {
			if sj != nil {
				j.after = append(j.after, edge{sj, softEdge})
			}
		}
	}
	deps := l.ix.deps[m]
	for i := len(deps) - 1; i >= 0; i-- {
		if dj := p.module(deps[i], nil); dj != nil {
			j.after = append(j.after, edge{dj, hardEdge})
		}
	}
	p.jobs = append(p.jobs, j)
	for _, s := range l.ix.softPost[m] {
		// After m rather than only if m loaded: nothing else needs them
		// to be absent, and a job must not depend on another's outcome
		// to know whether to run.
		p.name(m, s, j)
	}
	return j
}

// name plans the modules a soft dependency s of m stands for.
func (p *plan) name(m, s string, after *job) []*job {
	mods := p.l.ix.lookup(s)
	if len(mods) == 0 {
		if !p.l.ix.builtin[modName(s)] {
			p.l.log.Debug("soft dependency not loaded", "module", m, "softdep", s, "err", ErrUnknown)
		}
		return nil
	}
	return p.modules(mods, after)
}

// run runs a plan's jobs and returns when they are done: one at a time in
// plan order with a single worker, else each on its own goroutine, with
// l.sem bounding the insertions.
func (l *Loader) run(ctx context.Context, jobs []*job) {
	if l.workers == 1 || len(jobs) == 1 {
		for _, j := range jobs {
			l.exec(ctx, j)
		}
		return
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { l.exec(ctx, j) })
	}
	wg.Wait()
}

// exec runs one job: it waits for the jobs before it, inserts the module,
// records the outcome and wakes the waiters.
func (l *Loader) exec(ctx context.Context, j *job) {
	err := l.load(ctx, j)
	l.mu.Lock()
	delete(l.jobs, j.name)
	switch {
	case err == nil:
		l.loaded[j.name] = true
		if j.inserted {
			j.seq = len(l.inserted)
			l.inserted = append(l.inserted, j.name)
		}
	case !canceled(err):
		l.failed[j.name] = err
	}
	// A cancelled job is neither: the next caller plans the module anew.
	j.err = err
	l.mu.Unlock()
	close(j.done)
}

func (l *Loader) load(ctx context.Context, j *job) error {
	for _, e := range j.after {
		<-e.j.done
		if e.j.err == nil {
			continue
		}
		switch e.kind {
		case hardEdge:
			return fmt.Errorf("load %s: dependency %s: %w", j.name, e.j.name, e.j.err)
		case softEdge:
			l.log.Debug("soft dependency not loaded", "module", j.name, "softdep", e.j.name, "err", e.j.err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("load %s: %w", j.name, err)
	}
	return l.insert(j)
}

// canceled reports whether err comes from a context ending rather than from
// the module, which must then not be recorded as failed.
func canceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// insert puts one module into the kernel, treating "already there" as done.
func (l *Loader) insert(j *job) error {
	m := j.name
	rel, ok := l.ix.files[m]
	if !ok {
		if l.ix.builtin[m] {
			return nil
		}
		return fmt.Errorf("load %s: not in modules.dep: %w", m, ErrUnknown)
	}
	// /sys/module/<m>/initstate exists for loaded modules only; checking
	// it spares the kernel reading and verifying a signed module it will
	// refuse with EEXIST.
	if _, err := os.Stat(filepath.Join(l.root, "sys", "module", m, "initstate")); err == nil {
		return nil
	}
	// The kernel makes a module's insert wait for every background probe
	// in progress (async_synchronize_full in do_init_module) unless the
	// module asked for async_probe: ext4's insert took 0.9 s of a boot,
	// waiting for ahci to reset six empty SATA links. A module loaded by
	// name (a file system, loop) drives no device that could probe in the
	// background, so it asks too, only to skip that wait.
	params := ""
	if storageDriver(rel) || j.named {
		params = "async_probe"
	}
	l.sem <- struct{}{}
	start := time.Now()
	insert := func() error { return l.insertFn(filepath.Join(l.ix.dir, filepath.FromSlash(rel)), params) }
	var err error
	if j.background {
		err = atLowPriority(insert)
	} else {
		err = insert()
	}
	took := time.Since(start)
	<-l.sem
	switch {
	case errors.Is(err, unix.EEXIST):
		return nil
	case err != nil:
		err = fmt.Errorf("load %s: %w", m, err)
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
	j.inserted = true
	l.log.Debug("module loaded", "module", m, "took", took.Round(time.Microsecond))
	return nil
}

// storageDrivers hold the drivers of disks and their controllers. Their
// probes wait on hardware (ahci resets every SATA link: 0.4 s in QEMU,
// seconds on real ports; disks spin up) and nothing needs them at once but
// the boot, which waits for its disk by the ESP's partition UUID. They
// probe in the background (the kernel's async_probe): the module's insert
// returns at once, and the loader, the other drivers and the phases that
// need no disk go on. NIC drivers keep probing before their insert
// returns: the network is configured from the links present when the
// coldplug ends.
var storageDrivers = []string{
	"kernel/drivers/ata/", "kernel/drivers/scsi/", "kernel/drivers/nvme/",
	"kernel/drivers/block/", "kernel/drivers/mmc/", "kernel/drivers/usb/storage/",
}

// storageDriver reports whether the module at rel (relative to the module
// directory) is one of the storageDrivers.
func storageDriver(rel string) bool {
	for _, d := range storageDrivers {
		if strings.HasPrefix(rel, d) {
			return true
		}
	}
	return false
}
