// Package install writes signed packages into the inactive A/B slot of
// their kind: a base package is staged for a trial boot, an application
// package is switched to at once, as DESIGN.md's "Packages" and "Slots and
// boot counting" require. For a base package the order of work is the
// safety argument:
//
//  1. kpkg.Open verifies the manifest's signature against the trusted keys;
//     then kind, hardware, requirements and version order are checked, and
//     a known upload size shorter than the package is refused. A refusal
//     here has written nothing, neither to a slot nor to the boot state.
//  2. The inactive slot is marked unbootable (and not the default) in the
//     boot state, so from here on a power cut leaves GRUB booting the
//     running slot.
//  3. The payload streams into the slot through one fixed buffer while it
//     is hashed; only a payload that ended with the manifest's size and
//     SHA-256 goes on. The slot is synced and read back, each MiB compared
//     with a hash of what was written.
//  4. The boot state is written for a trial boot: the slot bootable, not
//     good, N tries, the new version, the default. LastGood is unchanged,
//     so a failed trial falls back to the running slot.
//  5. The box reboots, now or when the operator chooses.
//
// Failures after step 2 leave the slot unbootable and the box on the
// running slot. One install runs at a time.
//
// An app package goes through the same checks (1.; its version must be
// newer than the installed application's, unless allowed; a box with no
// application takes any version) and the same write and read-back (3.)
// into the application slot not in use (app-a or app-b; app-a on a box
// with none), which nothing mounts or runs. Then SwitchApp stops the
// running application, starts the new one and commits it once its health
// check passes, or goes back to the previous version; the job ends with
// its sentence ("app demo 1.1.0 is running", or why it was rolled back).
// The boot state is not touched and the box does not reboot.
//
// # HTTP
//
// Routes registers, for the agent's authenticated API:
//
//	POST /api/v1/install[?allow_downgrade=1][&reboot=later]
//	GET  /api/v1/jobs
//	GET  /api/v1/jobs/{id}
//
// The package is the request body, or an offline bundle of packages
// (image/bundle; told apart by its first 512 bytes), which installs as one
// job of kind "bundle": see StartBundle. Because the upload is the work, the
// install runs while the body is read and the answer comes once the outcome
// is known: 202 {"job": id, "message": sentence} when the payload is
// written, read back and the trial boot is staged (the reboot follows the
// answer unless reboot=later) or the new application runs, or an error
// {"error": sentence}, with "job" too when a job had started:
//
//	400  the package is damaged, truncated, its signature does not verify,
//	     its payload does not match the manifest, or the upload broke off
//	403  it is signed by a key this box does not trust
//	409  its version is not newer (without allow_downgrade=1), or a base is
//	     below the anti-rollback floor (with it too); another install is
//	     running, a reboot into a new slot is pending, or a bundle waits to
//	     finish after its reboot; the running slot is an uncommitted trial
//	     and the other slot is the only committed one
//	422  its manifest is invalid, it is an app package on a box without
//	     application runtime, it is for other hardware, its requirements do
//	     not hold, it does not fit the slot, or (an app package) it was
//	     written but failed its health check and was rolled back; a bundle
//	     on a box without data partition (PendingDir), or whose packages
//	     for after the reboot do not fit there
//	500  the appliance failed: boot state, slot device, read-back mismatch
//
// A job is registered once the package is accepted (its signature and
// checks passed), before anything is written. A client that wants progress
// during a long upload polls GET /api/v1/jobs, which lists recent jobs
// newest first, and follows the running install job; each job reports
// state (running, done, failed), progress 0..1 (the write and the
// read-back are each half; for an app package 45% each, and the health
// check the rest) and a message sentence.
package install

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/inventory"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/agent/supervisor"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// Errors Start wraps, besides kpkg's, so callers (and the HTTP status) can
// tell why an install did not happen. Their text is never shown: each
// failure carries its own sentence.
var (
	// ErrBusy: another install runs, or a reboot into a new slot is pending.
	ErrBusy = errors.New("install busy")
	// ErrNotNewer: the version is not newer than the installed one and
	// allow_downgrade was not given.
	ErrNotNewer = errors.New("version not newer")
	// ErrBelowFloor: a base below the anti-rollback floor a committed
	// base set; allow_downgrade does not change that.
	ErrBelowFloor = errors.New("below the anti-rollback floor")
	// ErrUncommitted: the running slot is an uncommitted trial, so the
	// other slot is the only committed fallback.
	ErrUncommitted = errors.New("running slot not committed")
	// ErrIncompatible: the package is not for this box (kind, hardware,
	// requirements, slot size).
	ErrIncompatible = errors.New("package incompatible")
	// ErrSystem: the appliance failed (boot state, slot device, read-back).
	ErrSystem = errors.New("appliance failure")
	// ErrAppFailed: an application was written but did not pass its
	// health check (or did not start), and the box went back to the
	// previous one.
	ErrAppFailed = errors.New("application rolled back")
	// ErrNotListed: the package is not the one the catalog entry names
	// (an update server, or someone on the way, sent another one).
	ErrNotListed = errors.New("package not the one listed")
)

// failure is an error whose message is a sentence for the operator and
// whose kind is one of the errors above.
type failure struct {
	kind error
	msg  string
}

func (f *failure) Error() string { return f.msg }
func (f *failure) Unwrap() error { return f.kind }

func fail(kind error, format string, args ...any) error {
	return &failure{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Device is an opened slot partition. *os.File is one.
type Device interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
	Close() error
}

// Installer installs base and app packages. Fill in the fields, then call
// Start or register Routes; the fields must not change afterwards.
type Installer struct {
	Trusted  []ed25519.PublicKey // the vendor keys the base image carries
	Hardware string              // this box's hardware model
	// Installed returns the installed version of each kind (the running
	// slot's); a missing kind is not installed.
	Installed func() map[kpkg.Kind]kpkg.Version
	// Slots changes the base slots' boot state: the installer marks,
	// stages and nothing else (package slots owns the transitions).
	Slots   *slots.Store
	Running layout.Label // the base slot booted now
	// OpenSlot opens a base slot's partition for reading and writing and
	// returns its size in bytes; see BlockDevices.
	OpenSlot func(slot layout.Label) (Device, int64, error)
	Reboot   func() error // nil: the operator reboots
	Log      *slog.Logger // nil: discard
	Tries    int          // trial boots for a new slot; 0 means bootstate.DefaultTries
	Jobs     *Jobs        // nil: a registry of the last DefaultJobs jobs
	// BeforeInstall runs once a package has been checked and before
	// anything is written (the automatic backup before every install);
	// what it says goes into the job's first message. Optional.
	BeforeInstall func(ctx context.Context, what string) string

	// Applications. Without AppSlots, OpenAppSlot and SwitchApp, app
	// packages are refused.
	//
	// AppSlots is the application slots' state (shared with the
	// application runtime): an app package goes into the slot the
	// committed application does not use (a when there is none).
	AppSlots *slots.AppStore
	// OpenAppSlot opens an application slot's partition for reading and
	// writing and returns its size; see AppBlockDevices. The install
	// closes it before SwitchApp.
	OpenAppSlot func(slot layout.Label) (Device, int64, error)
	// SwitchApp runs the application just written to slot with version
	// and returns once it is committed (nil) or rolled back (an error
	// whose message is the sentence the job ends with); apps.Manager's
	// Switch is one.
	SwitchApp func(ctx context.Context, slot layout.Label, version string) error

	// PendingDir is a folder on the data partition (/data/keel/pending)
	// that the installer owns: the packages of an offline bundle that
	// install after the reboot into its base package wait there, with the
	// bundle's state (job.json; see StartBundle and ResumePending). Empty:
	// bundles are refused.
	PendingDir string

	// Inventory is told of every package installed, with its path (an
	// upload, a bundle, an online update), so the wait a package asks for
	// holds however the next one comes. Nil: nothing is recorded.
	Inventory *inventory.Inventory

	// Drain bounds how long an upload refused after its first bytes is
	// read on and discarded, so that the client gets the answer; zero
	// fields are api's defaults.
	Drain api.Drain

	mu        sync.Mutex // held for a whole install
	current   atomic.Pointer[Job]
	rebooting atomic.Bool
	jobsOnce  sync.Once
}

// Options are an install request's choices.
type Options struct {
	// AllowDowngrade allows the same or an older version. Nothing allows
	// overwriting the only committed base slot during a trial boot.
	AllowDowngrade bool
	// RebootLater stages the trial boot without rebooting.
	RebootLater bool
	// Via is the path the package came by, for the inventory; empty is an
	// upload. A bundle's packages are always recorded as a bundle's.
	Via inventory.Via
	// Expect, for a package the catalog lists, is what the entry says: the
	// manifest must match it, and the stream is read to its end (where the
	// catalog's size and SHA-256 are checked) before a base is staged or
	// an app started, so a substitute is refused having changed nothing.
	Expect *Expected
	// Size is the package's length when known (an HTTP Content-Length),
	// else 0 or less. A package longer than Size is refused as truncated
	// before anything is written.
	Size int64
	// RebootAfter, when not nil, delays the reboot until it is closed, in
	// another goroutine, so that an HTTP answer reaches the client first.
	// When nil, Start reboots before it returns.
	RebootAfter <-chan struct{}
}

// Expected is the package a catalog entry names.
type Expected struct {
	Kind    kpkg.Kind
	Name    string
	Version kpkg.Version
}

func (e Expected) String() string { return fmt.Sprintf("%s %s %s", e.Kind, e.Name, e.Version) }

// copyBuffer is the one buffer a payload streams through: large enough for
// block devices to see big sequential writes, and the same whatever the
// package's size.
const copyBuffer = 1 << 20

func (in *Installer) log() *slog.Logger {
	if in.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return in.Log
}

func (in *Installer) before(ctx context.Context, what string) string {
	if in.BeforeInstall == nil {
		return ""
	}
	return in.BeforeInstall(ctx, what)
}

func (in *Installer) jobs() *Jobs {
	in.jobsOnce.Do(func() {
		if in.Jobs == nil {
			in.Jobs = NewJobs(DefaultJobs)
		}
	})
	return in.Jobs
}

func (in *Installer) tries() (int, error) {
	switch {
	case in.Tries == 0:
		return bootstate.DefaultTries, nil
	case in.Tries < 1 || in.Tries > bootstate.MaxTries:
		return 0, fail(ErrSystem, "the agent is configured with %d trial boots; it must be 1 to %d", in.Tries, bootstate.MaxTries)
	}
	return in.Tries, nil
}

// Start installs the package read from body into the inactive slot, in the
// caller's goroutine, and returns when the trial boot is staged (and, unless
// opts say otherwise, after calling Reboot), or for an app package when the
// new application runs or was rolled back. body is read up to the end of
// the package and no further. A package refused before anything was written
// returns a nil Job; once the job exists it is returned with the error, and
// it stays in the registry as failed. Every error's message is a sentence
// for the operator.
func (in *Installer) Start(ctx context.Context, body io.Reader, opts Options) (*Job, error) {
	if err := in.lock(); err != nil {
		return nil, err
	}
	defer in.mu.Unlock()

	p, err := kpkg.Open(body, in.Trusted)
	if err != nil {
		return nil, fmt.Errorf("%w; nothing was written", err)
	}
	m := &p.Manifest
	var verify func() error
	if x := opts.Expect; x != nil {
		if m.Kind != x.Kind || m.Name != x.Name || m.Version.Compare(x.Version) != 0 {
			return nil, fail(ErrNotListed, "the update server sent %s %s %s where the catalog lists %s; nothing was written; check for updates again, and tell the vendor if it happens again",
				m.Kind, m.Name, m.Version, x)
		}
		// The rest of the stream (nothing, for the package listed) and
		// the catalog's check of the whole file's size and SHA-256.
		verify = func() error {
			_, err := io.Copy(io.Discard, body)
			return err
		}
	}
	if err := in.check(p, opts); err != nil {
		return nil, err
	}
	before := in.before(ctx, fmt.Sprintf("%s %s %s", m.Kind, m.Name, m.Version))
	tries := 0
	if m.Kind == kpkg.KindBase {
		if tries, err = in.tries(); err != nil {
			return nil, err
		}
		if _, err := in.checkTrial(); err != nil {
			return nil, err
		}
	}
	sl, err := in.openSlot(p)
	if err != nil {
		return nil, err
	}

	j := newJob(m.Version.String(), sl.label)
	j.pkg = m.Kind
	if before != "" {
		j.message += "; " + before
	}
	in.jobs().add(j)
	in.current.Store(j)
	defer in.current.Store(nil)
	log := in.log().With("job", j.ID(), "kind", m.Kind, "name", m.Name, "version", m.Version.String(), "slot", sl.label)
	log.Info("install accepted", "key", p.KeyID, "bytes", m.Payload.Size, "allow_downgrade", opts.AllowDowngrade)
	failed := func(err error) (*Job, error) {
		log.Error("install failed", "err", err)
		j.finish(Failed, err.Error())
		return j, err
	}

	if m.Kind == kpkg.KindApp {
		if err := in.installApp(ctx, j, p, sl, verify); err != nil {
			return failed(err)
		}
		in.record(m, opts.Via)
		msg := fmt.Sprintf("app %s %s is running", m.Name, m.Version)
		j.finish(Done, msg)
		log.Info(msg)
		return j, nil
	}
	target, err := in.installBase(ctx, j, p, sl, verify)
	if err != nil {
		return failed(err)
	}
	j.setMessage(fmt.Sprintf("staging a trial boot of %s in slot %s", m.Version, target))
	// A single base package is a bundle of one: its record on the data
	// partition (staging, then staged) lets the job tell after the reboot
	// how the trial boot ended.
	pj := in.recordSingle(j, m)
	if err := in.stageTrial(target, m, tries); err != nil {
		in.dropSingle(pj)
		return failed(fail(ErrSystem, "%s was written to slot %s, but its trial boot could not be staged: %v; the box stays on slot %s", m.Version, target, err, in.Running))
	}
	in.stagedSingle(pj)
	in.record(m, opts.Via)

	what := fmt.Sprintf("%s %s is in slot %s, staged for a trial boot with %d tries", m.Name, m.Version, target, tries)
	if opts.RebootLater || in.Reboot == nil {
		j.finish(Done, what+"; it boots on the next reboot")
		log.Info("install done; reboot later")
		return j, nil
	}
	j.finish(Done, what+"; the box reboots into it now")
	log.Info("install done; rebooting")
	in.reboot(opts.RebootAfter, j, what, log)
	return j, nil
}

// checkTrial reads the boot state and refuses, before anything is
// written, to write the inactive base slot while the running slot is an
// uncommitted trial and the inactive one holds the only committed
// fallback. slots.Store.MarkUnbootable checks again under its lock.
func (in *Installer) checkTrial() (target layout.Label, err error) {
	st, _, err := in.Slots.Read()
	if err != nil {
		return "", fail(ErrSystem, "the boot state cannot be read, so nothing was written: %v", err)
	}
	target = in.Running.Other()
	if err := slots.CheckOverwrite(st, target, in.Running); err != nil {
		return "", fail(ErrUncommitted, "%v", unwrapSentence(err))
	}
	return target, nil
}

// unwrapSentence drops the sentinel's text from a slots error, keeping the
// sentence after it.
func unwrapSentence(err error) string {
	msg := err.Error()
	for _, e := range []error{slots.ErrOnlyFallback, slots.ErrBelowFloor} {
		if _, rest, ok := strings.Cut(msg, e.Error()+": "); ok {
			return rest
		}
	}
	return msg
}

// appsRun reports whether app packages can be installed: the application
// runtime is up.
func (in *Installer) appsRun() bool {
	return in.AppSlots != nil && in.OpenAppSlot != nil && in.SwitchApp != nil
}

// lock takes the install lock, or says why another install holds it, the
// box is about to reboot, or a bundle waits for its reboot. Unlock in.mu
// after a nil error.
func (in *Installer) lock() error {
	if !in.mu.TryLock() {
		if j := in.current.Load(); j != nil {
			return fail(ErrBusy, "another install is running (job %s, %s); wait for it to finish", j.ID(), j.Status().Version)
		}
		return fail(ErrBusy, "another install is starting; wait for it to finish")
	}
	if in.rebooting.Load() {
		in.mu.Unlock()
		return fail(ErrBusy, "the box is about to reboot into a newly installed slot; install again once it is back")
	}
	if err := in.pendingBusy(); err != nil {
		in.mu.Unlock()
		return err
	}
	return nil
}

// Ready says why an install would be refused now, before anything of the
// package is read: another install runs, the box is about to reboot, or a
// bundle waits to finish. Start checks again under its lock.
func (in *Installer) Ready() error {
	if err := in.lock(); err != nil {
		return err
	}
	in.mu.Unlock()
	return nil
}

// recordSingle writes the record of a single base package about to be
// staged, when the box has a data partition; a record that cannot be
// written costs only the job's outcome after the reboot.
func (in *Installer) recordSingle(j *Job, m *kpkg.Manifest) *pendingJob {
	if in.PendingDir == "" {
		return nil
	}
	in.clearPending("")
	pj := &pendingJob{Job: j.ID(), Kind: kindInstall, Step: StepStaging, Progress: 1, Total: 1,
		Base: m.Version.String(), Installed: []string{fmt.Sprintf("%s %s %s", m.Kind, m.Name, m.Version)}}
	err := os.MkdirAll(in.PendingDir, 0o755)
	if err == nil {
		err = in.writePending(pj)
	}
	if err != nil {
		in.log().Warn("the install's record was not saved: its job is not shown after the reboot", "err", err)
		return nil
	}
	return pj
}

func (in *Installer) stagedSingle(pj *pendingJob) {
	if pj == nil {
		return
	}
	pj.Step = StepStaged
	if err := in.writePending(pj); err != nil {
		in.log().Warn("recording the staged trial boot", "err", err)
	}
}

func (in *Installer) dropSingle(pj *pendingJob) {
	if pj != nil {
		in.clearPending("")
	}
}

// record tells the inventory that m was installed (an app committed, a
// base staged for its trial boot).
func (in *Installer) record(m *kpkg.Manifest, via inventory.Via) {
	if in.Inventory == nil {
		return
	}
	if via == "" {
		via = inventory.Upload
	}
	if err := in.Inventory.Recorded(*m, via); err != nil {
		in.log().Warn("install not recorded: the wait it asks for may not hold after a reboot", "package", m.Name+" "+m.Version.String(), "err", err)
	}
}

// stageTrial stages a trial boot of base m in target with tries.
func (in *Installer) stageTrial(target layout.Label, m *kpkg.Manifest, tries int) error {
	floor := ""
	if m.Floor != (kpkg.Version{}) {
		floor = m.Floor.String()
	}
	_, err := in.Slots.StageTrial(target, m.Version.String(), floor, tries)
	return err
}

// reboot marks the box as about to reboot into a staged slot (installs are
// refused from now on) and calls Reboot: at once, or when after is not nil
// once it is closed, in another goroutine. A failed reboot is told in job
// j's message after what, the sentence of what was staged.
func (in *Installer) reboot(after <-chan struct{}, j *Job, what string, log *slog.Logger) {
	in.rebooting.Store(true)
	if after == nil {
		in.rebootNow(j, what, log)
		return
	}
	supervisor.Go(log, "reboot after install", func() {
		<-after
		in.rebootNow(j, what, log)
	})
}

func (in *Installer) rebootNow(j *Job, what string, log *slog.Logger) {
	if err := in.Reboot(); err != nil {
		in.rebooting.Store(false) // nothing is pending: let the operator retry
		log.Error("reboot after install failed", "err", err)
		j.setMessage(fmt.Sprintf("%s, but the reboot failed (%v); reboot to boot it", what, err))
	}
}

// installed is what Installed reports, or nothing.
func (in *Installer) installed() map[kpkg.Kind]kpkg.Version {
	out := map[kpkg.Kind]kpkg.Version{}
	if in.Installed != nil {
		for k, v := range in.Installed() {
			out[k] = v
		}
	}
	return out
}

// check refuses a verified package that must not be installed on this box.
func (in *Installer) check(p *kpkg.Package, opts Options) error {
	return in.checkAgainst(p, opts, in.installed())
}

// checkAgainst is check with the installed versions given: a bundle checks
// the packages that install after a reboot against the versions the box
// will have then.
func (in *Installer) checkAgainst(p *kpkg.Package, opts Options, installed map[kpkg.Kind]kpkg.Version) error {
	m := &p.Manifest
	if m.Kind == kpkg.KindApp && !in.appsRun() {
		return fail(ErrIncompatible, "%s %s is an %s package, and only %s packages can be installed so far: the application runtime is not running on this box; nothing was written", m.Name, m.Version, m.Kind, kpkg.KindBase)
	}
	if err := m.CheckHardware(in.Hardware); err != nil {
		return fail(ErrIncompatible, "%v; nothing was written", err)
	}
	if err := m.CheckRequirements(installed); err != nil {
		return fail(ErrIncompatible, "%s %s %v; nothing was written", m.Name, m.Version, err)
	}
	if m.Kind == kpkg.KindBase {
		st, _, err := in.Slots.Read()
		if err != nil {
			return fail(ErrSystem, "the boot state cannot be read to check %s %s against the anti-rollback floor: %v; nothing was written", m.Name, m.Version, err)
		}
		if err := slots.CheckFloor(st, m.Version.String()); err != nil {
			return fail(ErrBelowFloor, "%s; nothing was written", unwrapSentence(err))
		}
	}
	if cur, ok := installed[m.Kind]; ok && !opts.AllowDowngrade {
		switch c := m.Version.Compare(cur); {
		case c == 0:
			return fail(ErrNotNewer, "%s is already installed; use allow_downgrade to reinstall", cur)
		case c < 0:
			return fail(ErrNotNewer, "%s is older than the installed %s; use allow_downgrade to downgrade", m.Version, cur)
		}
	}
	if need := minPackageSize(p); opts.Size > 0 && opts.Size < need {
		return fmt.Errorf("%w: the upload has %d bytes but %s %s needs at least %d; nothing was written",
			kpkg.ErrTruncated, opts.Size, m.Name, m.Version, need)
	}
	return nil
}

// minPackageSize is the shortest archive that holds p: ustar headers, the
// three entries padded to blocks, and the end-of-archive marker. Extensions
// kpkg might tolerate only add bytes, so a shorter upload is truncated.
func minPackageSize(p *kpkg.Package) int64 {
	const block = 512
	pad := func(n int64) int64 { return (n + block - 1) / block * block }
	return 3*block + pad(int64(len(p.ManifestJSON))) + pad(int64(len(p.Signature))) + pad(p.Manifest.Payload.Size) + 2*block
}

// write marks target unbootable, streams the payload into it and checks it
// by reading it back from the disk.
func (in *Installer) write(ctx context.Context, p *kpkg.Package, dev Device, target layout.Label, j *Job) error {
	if _, err := in.Slots.MarkUnbootable(target, in.Running); err != nil {
		if errors.Is(err, slots.ErrOnlyFallback) {
			return fail(ErrUncommitted, "%s; nothing was written", unwrapSentence(err))
		}
		return fail(ErrSystem, "slot %s could not be marked unbootable before writing: %v", target, err)
	}
	return stream(ctx, p, dev, "slot "+string(target), j, 2*p.Manifest.Payload.Size, in.log().With("job", j.ID()))
}

// stream writes the payload into dev (named slot in messages) through one
// buffer while kpkg hashes it, syncs it, and reads it back from the disk to
// check each MiB against what was written. The write and the read-back
// each count for Payload.Size bytes of the job's progress, out of total.
func stream(ctx context.Context, p *kpkg.Package, dev Device, slot string, j *Job, total int64, log *slog.Logger) error {
	m := &p.Manifest
	size := m.Payload.Size
	j.setMessage(fmt.Sprintf("writing %s to %s", m.Version, slot))
	buf := make([]byte, copyBuffer)
	start := time.Now()
	// progressWriter hides *os.File's ReadFrom, so the copy goes through
	// buf and is counted as it goes.
	w := &progressWriter{ctx: ctx, w: io.NewOffsetWriter(dev, 0), job: j, total: total, slot: slot}
	sums := newReadBack(size)
	if err := copyFull(io.MultiWriter(sums, w), p.Payload(), buf); err != nil {
		return fmt.Errorf("writing %s to %s stopped at byte %d: %w", m.Version, slot, w.n, err)
	}
	if err := p.Verified(); err != nil {
		return fmt.Errorf("writing %s to %s: %w", m.Version, slot, err)
	}
	if err := dev.Sync(); err != nil {
		return fail(ErrSystem, "syncing %s failed: %v", slot, err)
	}
	dropCache(dev, size)
	written := time.Since(start)

	j.setMessage(fmt.Sprintf("reading %s back", slot))
	sums.rewind()
	hw := &progressWriter{ctx: ctx, w: sums, job: j, total: total, done: size, slot: slot}
	if err := copyFull(hw, io.NewSectionReader(dev, 0, size), buf); err != nil {
		return fail(ErrSystem, "reading %s back failed at byte %d: %v", slot, hw.n, err)
	}
	if err := sums.err(); err != nil {
		return fail(ErrSystem, "%s: %v: the disk may be failing", slot, err)
	}
	// Under emulation the write is CPU-bound (TLS and SHA-256) and the
	// read-back mostly the disk: the split says where an install's time
	// went (the bench prints it).
	log.Info("payload written and read back", "slot", slot, "bytes", size,
		"write_s", written.Seconds(), "read_back_s", (time.Since(start) - written).Seconds())
	return nil
}

// readBack checks that a slot reads back as it was written. The payload's
// SHA-256 was checked on its way in (that is what makes it authentic); what
// is left to find is a disk that returns other bytes than it was given, and
// for that a 64-bit hash of each MiB is as good and costs far less than
// SHA-256 on an emulated CPU (a 200 MiB read-back took 6.7 s with SHA-256).
//
// Its Write takes the bytes as copyFull hands them out, a MiB at a time:
// first the payload on its way to the disk, recording a hash of each MiB,
// then, after rewind, what the disk reads back, comparing.
type readBack struct {
	seed    maphash.Seed
	sums    []uint64
	size, n int64
	reading bool
	bad     int64 // the first MiB that read back differently, or -1
}

func newReadBack(size int64) *readBack {
	return &readBack{seed: maphash.MakeSeed(), sums: make([]uint64, 0, (size+copyBuffer-1)/copyBuffer), size: size, bad: -1}
}

func (r *readBack) Write(b []byte) (int, error) {
	if r.n%copyBuffer != 0 || len(b) > copyBuffer {
		return 0, fmt.Errorf("read-back check: a write of %d bytes at byte %d is not a MiB of its own", len(b), r.n)
	}
	sum, i := maphash.Bytes(r.seed, b), r.n/copyBuffer
	switch {
	case !r.reading:
		r.sums = append(r.sums, sum)
	case r.bad < 0 && (i >= int64(len(r.sums)) || r.sums[i] != sum):
		r.bad = i
	}
	r.n += int64(len(b))
	return len(b), nil
}

// rewind starts the comparison with what was written.
func (r *readBack) rewind() { r.reading, r.n = true, 0 }

// err says whether everything written read back the same.
func (r *readBack) err() error {
	switch {
	case r.bad >= 0:
		return fmt.Errorf("MiB %d reads back differently from what was written", r.bad)
	case r.n != r.size:
		return fmt.Errorf("%d of %d bytes were read back", r.n, r.size)
	}
	return nil
}

// copyFull copies src to dst in writes of a whole buf. A TLS connection
// hands out at most one 16 KiB record per read, and a write of that size
// to a block device cost more than receiving and hashing it (an emulated
// CPU installed 200 MiB in 37.6 s, writing as it read, where receiving
// alone took 5.5 s): filling the buffer first makes one write per MiB.
func copyFull(dst io.Writer, src io.Reader, buf []byte) error {
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		// ReadFull returns these two sentinels themselves when src
		// ended with io.EOF; a wrapped one is src's own failure.
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return nil
		case err != nil:
			return err
		}
	}
}

// dropCache asks the kernel to forget the slot's cached pages, so that the
// read-back reads the disk rather than the page cache it was written from.
// Best effort: a device without a descriptor is read back as it is.
func dropCache(dev Device, size int64) {
	if f, ok := dev.(interface{ Fd() uintptr }); ok {
		_ = unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_DONTNEED)
	}
}

// progressWriter counts bytes into the job's progress and stops when ctx
// ends. Errors of the destination (the slot; a hash never fails) are the
// appliance's.
type progressWriter struct {
	ctx         context.Context
	w           io.Writer
	job         *Job
	n           int64  // bytes through this writer
	done, total int64  // progress = (done+n)/total
	slot        string // "slot b", "application slot b"
}

func (w *progressWriter) Write(b []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, fmt.Errorf("the install was cancelled: %w", err)
	}
	n, err := w.w.Write(b)
	w.n += int64(n)
	w.job.setProgress(float64(w.done+w.n) / float64(w.total))
	if err != nil {
		return n, fail(ErrSystem, "%s: %v", w.slot, err)
	}
	return n, nil
}
