package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/agent/inventory"
	"keel.dev/keel/image/bundle"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// Offline bundles (image/bundle) install as one job of kind "bundle", in
// the bundle's order:
//
//   - Before anything is written, bundle.json must be sound (bundle.Open
//     refuses a damaged or empty one) and the plan must hold against the
//     installed versions: no package older than what the box has (or the
//     bundle installs before it) without allow_downgrade, no app package on a box
//     without application runtime, room on the data partition for what
//     waits for the reboot, versions that go up along the bundle. A
//     package whose version (or a newer one) is installed is skipped, so a
//     bundle can be uploaded again after a failure; with allow_downgrade, nothing is
//     skipped. Each package's own manifest is verified
//     (signature, kind, name and version as bundle.json lists them,
//     hardware, requirements, version order) when its turn comes.
//   - Packages before the first base package install straight from the
//     stream, as single uploads do: an app package is switched to at once.
//   - The first base package streams into the inactive slot, as a single
//     upload does (never through the data partition), and is staged for a
//     trial boot once the whole bundle is received and its end checked.
//     Until then the slot is unbootable, so a bundle that breaks off after
//     its base leaves the box as it was.
//   - Every package after it needs the new base running: it is checked
//     (against the versions the box will have then) and saved whole into
//     Installer.PendingDir as it streams (temp file, fsync, rename), its
//     size and SHA-256 checked by the bundle reader and its payload by
//     kpkg. Then PendingDir/job.json is written, the trial boot is staged,
//     and the box reboots (unless reboot=later). The job stays running.
//   - After the reboot the agent calls ResumePending, which installs the
//     saved packages in order, recording each in job.json.
//
// # PendingDir/job.json
//
// The state of a bundle that waits for or resumes after a reboot, written
// atomically (pendingJob): the job id, its step (see Step), the base
// version the box must run to go on, the saved packages in order (file,
// kind, name, version, size, position in the bundle) and the index of the
// next one, the packages installed so far, and the job's message and
// progress. A package is installed, then job.json records it,
// then its file goes: a power cut in between installs it again on the next
// boot, which finds its version installed and moves on. Once the job is
// done or failed, job.json stays as its record (and ResumePending shows it
// in the registry on every boot) until the next bundle starts. Until it is
// done or failed, every install is refused (409). The installer owns
// PendingDir: it removes whatever else it finds there when a bundle starts
// or a job ends.

// kindInstall is the job kind of a single package.
const kindInstall = "install"

// pendingFile is the name of the state file in PendingDir.
const pendingFile = "job.json"

// Step is where a bundle job that spans a reboot stands: the named states
// of PendingDir/job.json, resumed after any reboot or power cut by one
// switch (ResumePending).
//
//	staging   job.json written, the trial boot of Base not staged yet
//	staged    the trial boot of Base staged: the box reboots into it
//	resuming  Base runs committed: the saved packages install from Next
//	done      every package installed (the record stays)
//	failed    stopped, with the reason (the record stays)
type Step string

// The steps of a bundle job.
const (
	StepStaging  Step = "staging"
	StepStaged   Step = "staged"
	StepResuming Step = "resuming"
	StepDone     Step = "done"
	StepFailed   Step = "failed"
)

// state is the job's state as the API shows it.
func (s Step) state() State {
	switch s {
	case StepDone:
		return Done
	case StepFailed:
		return Failed
	}
	return Running
}

// pendingJob is the content of PendingDir/job.json.
type pendingJob struct {
	Job string `json:"job"`
	// Kind is "install" for a single base package (a bundle of one: no
	// saved packages; the record says how its trial boot ended), "" for
	// a bundle.
	Kind string `json:"kind,omitempty"`
	Step Step   `json:"step"`
	// Message is the job's sentence once it is done or failed.
	Message string `json:"message,omitempty"`
	// Progress is the job's progress when Packages[Next] starts.
	Progress float64 `json:"progress"`
	Total    int     `json:"total"` // packages in the bundle
	// AllowDowngrade: packages older than (or as old as) the installed
	// ones were allowed.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// Base is the base version the box must run for the job to go on; a
	// box that runs another one rolled back.
	Base     string           `json:"base"`
	Packages []pendingPackage `json:"packages"` // saved for after the reboot, in install order
	Next     int              `json:"next"`     // index in Packages of the next one to install
	// Installed lists the packages installed so far ("app demo 1.1.0").
	Installed []string `json:"installed"`
}

// pendingPackage is a package saved in PendingDir.
type pendingPackage struct {
	File    string       `json:"file"` // in PendingDir
	Kind    kpkg.Kind    `json:"kind"`
	Name    string       `json:"name"`
	Version kpkg.Version `json:"version"`
	Size    int64        `json:"size"`
	Index   int          `json:"index"` // 1-based position in the bundle
}

func (p pendingPackage) entry() bundle.Entry {
	return bundle.Entry{Kind: p.Kind, Name: p.Name, Version: p.Version, File: p.File, Size: p.Size}
}

// step is one package of a bundle being uploaded.
type step struct {
	e        bundle.Entry
	skip     string  // why it is skipped: its version, or a newer one, is installed
	pending  bool    // after the base: saved, installed after the reboot
	lo, span float64 // its share of the job's progress during the upload
	done     string  // what became of it, once it went well
}

// StartBundle installs the offline bundle read from body (see above and
// image/bundle) as one job, in the caller's goroutine. Without a base
// package it returns when the last package is installed, the job done or
// failed. With one, it returns once the base is written, the packages
// after it are saved in PendingDir and the trial boot is staged, the job
// still running; the reboot follows as for Start, and ResumePending
// finishes the job after it. A bundle refused before anything was written
// returns a nil Job. Errors are sentences, and wrap the errors Start's do.
func (in *Installer) StartBundle(ctx context.Context, body io.Reader, opts Options) (*Job, error) {
	if err := in.lock(); err != nil {
		return nil, err
	}
	defer in.mu.Unlock()
	if in.PendingDir == "" {
		return nil, fail(ErrIncompatible, "this box cannot install a bundle: the packages after a base package wait on the data partition for the reboot, and this box has no data partition in use; upload the packages one by one; nothing was written")
	}
	tries, err := in.tries()
	if err != nil {
		return nil, err
	}
	br, err := bundle.Open(body)
	if err != nil {
		return nil, fmt.Errorf("%w; nothing was written", err)
	}
	n := len(br.Meta.Packages)
	if need, err := bundle.Size(br.Meta); err == nil && opts.Size > 0 && opts.Size < need {
		return nil, fmt.Errorf("%w: the upload has %d bytes but the bundle of %d packages needs %d; nothing was written", bundle.ErrTruncated, opts.Size, n, need)
	}
	steps, atReboot, err := in.plan(br.Meta.Packages, opts)
	if err != nil {
		return nil, err
	}
	if err := in.prepareDir(steps); err != nil {
		return nil, err
	}
	// A base's uncommitted-trial refusal comes before anything is written,
	// as for a single base package. Only the first base installed can be
	// written now; any other one is saved for after the reboot.
	for _, s := range steps {
		if s.e.Kind == kpkg.KindBase && s.skip == "" && !s.pending {
			if _, err := in.checkTrial(); err != nil {
				return nil, err
			}
			break
		}
	}

	before := in.before(ctx, fmt.Sprintf("a bundle of %d packages", n))
	j := newJob(steps[0].e.Version.String(), "")
	j.kind = "bundle"
	j.message = fmt.Sprintf("starting the install of a bundle of %d packages", n)
	if before != "" {
		j.message += "; " + before
	}
	in.jobs().add(j)
	in.current.Store(j)
	defer in.current.Store(nil)
	log := in.log().With("job", j.ID(), "serial", br.Meta.Serial)
	log.Info("bundle accepted", "packages", n, "allow_downgrade", opts.AllowDowngrade)
	_ = os.Remove(filepath.Join(in.PendingDir, pendingFile)) // the previous bundle's record

	sim := in.installed()
	var (
		base    *step // the base package written, to stage
		baseM   *kpkg.Manifest
		target  layout.Label
		pending []pendingPackage
	)
	failed := func(i int, err error) (*Job, error) {
		in.clearPending("")
		note := ""
		if base != nil {
			note = fmt.Sprintf("%s was written to slot %s but not staged, so slot %s is left unbootable and the box stays on slot %s", base.e, target, target, in.Running)
		}
		err = stepFailed(steps, i, err, note)
		log.Error("bundle install failed", "err", err)
		j.finish(Failed, err.Error())
		return j, err
	}
	for i := range steps {
		s := &steps[i]
		e, r, err := br.Next()
		if err != nil {
			return failed(i, err)
		}
		drain := func() error { _, err := io.Copy(io.Discard, r); return err }
		what := fmt.Sprintf("installing %d of %d: %s", i+1, n, e)
		if s.pending {
			what = fmt.Sprintf("receiving %d of %d: %s, which installs after the reboot", i+1, n, e)
		}
		j.window(what, s.lo, s.span)
		j.setPackage(e.Kind, e.Version.String(), "")
		switch {
		case s.skip != "":
			if err := drain(); err != nil {
				return failed(i, err)
			}
			s.done = e.String() + " (" + s.skip + ")"
		case s.pending:
			name := fmt.Sprintf("%d-%s", i+1, e.File)
			if err := in.receive(ctx, j, e, r, name, sim, opts.AllowDowngrade); err != nil {
				return failed(i, err)
			}
			pending = append(pending, pendingPackage{File: name, Kind: e.Kind, Name: e.Name, Version: e.Version, Size: e.Size, Index: i + 1})
		default:
			p, err := in.openChecked(r, e, sim, opts.AllowDowngrade)
			if err != nil {
				return failed(i, err)
			}
			sl, err := in.openSlot(p)
			if err != nil {
				return failed(i, err)
			}
			if e.Kind == kpkg.KindBase {
				if target, err = in.installBase(ctx, j, p, sl, drain); err != nil {
					return failed(i, err)
				}
				base, baseM = s, &p.Manifest
				break
			}
			if err := in.installApp(ctx, j, p, sl, drain); err != nil {
				return failed(i, err)
			}
			in.record(&p.Manifest, inventory.Bundle)
			s.done = e.String()
		}
		if s.skip == "" {
			sim[e.Kind] = e.Version
		}
		log.Info("bundle package done", "package", e.String(), "index", i+1, "skipped", s.skip != "", "pending", s.pending)
	}
	if _, _, err := br.Next(); err != io.EOF {
		return failed(n, err)
	}
	j.window("", 0, 0)

	var installed []string
	for i := range steps {
		if s := &steps[i]; s.done != "" {
			installed = append(installed, s.done)
		} else if s == base {
			installed = append(installed, s.e.String())
		}
	}
	if base == nil {
		msg := "the bundle is installed: " + strings.Join(installed, ", ")
		j.finish(Done, msg)
		log.Info(msg)
		return j, nil
	}

	// The commit point: job.json, then the trial boot.
	pj := &pendingJob{
		Job: j.ID(), Step: StepStaging, Progress: atReboot, Total: n, AllowDowngrade: opts.AllowDowngrade,
		Base: base.e.Version.String(), Packages: pending, Installed: installed,
	}
	if err := in.writePending(pj); err != nil {
		return failed(n, fail(ErrSystem, "the state of the bundle cannot be saved on the data partition: %v", err))
	}
	if err := in.stageTrial(target, baseM, tries); err != nil {
		_ = os.Remove(filepath.Join(in.PendingDir, pendingFile))
		return failed(n, fail(ErrSystem, "the trial boot of %s in slot %s could not be staged: %v", base.e, target, err))
	}
	in.record(baseM, inventory.Bundle)
	pj.Step = StepStaged
	if err := in.writePending(pj); err != nil {
		// ResumePending goes by the running version; the step only
		// words its sentence.
		log.Warn("recording the staged trial boot", "err", err)
	}
	j.setProgress(atReboot)
	what := fmt.Sprintf("%s is in slot %s, staged for a trial boot with %d tries", base.e, target, tries)
	then := "the job finishes once it runs"
	if len(pending) > 0 {
		then = fmt.Sprintf("then installs the %d remaining packages (%s)", len(pending), pendingList(pending))
	}
	if opts.RebootLater || in.Reboot == nil {
		j.setMessage(fmt.Sprintf("%s; the box boots base %s on the next reboot, %s", what, base.e.Version, then))
		log.Info("bundle staged; reboot later", "pending", len(pending))
		return j, nil
	}
	j.setMessage(fmt.Sprintf("%s; the box reboots into base %s now, %s", what, base.e.Version, then))
	log.Info("bundle staged; rebooting", "pending", len(pending))
	in.reboot(opts.RebootAfter, j, what, log)
	return j, nil
}

// plan checks a bundle's list against the installed versions and lays
// out the steps and their progress: a package installed at once counts
// its size, one saved for after the reboot twice its size (the saving
// now, the install then). atReboot is the progress once all is received.
func (in *Installer) plan(es []bundle.Entry, opts Options) (steps []step, atReboot float64, err error) {
	sim := in.installed()
	fromBundle := map[kpkg.Kind]bool{}
	steps = make([]step, len(es))
	base, installs := false, 0
	var weight float64
	for i, e := range es {
		s := &steps[i]
		s.e = e
		if e.Kind == kpkg.KindApp && !in.appsRun() {
			return nil, 0, fail(ErrIncompatible, "the bundle holds %s (%d of %d), and this box has no application runtime to install it; nothing was written", e, i+1, len(es))
		}
		if cur, ok := sim[e.Kind]; ok && !opts.AllowDowngrade {
			switch c := e.Version.Compare(cur); {
			case c <= 0 && fromBundle[e.Kind]:
				return nil, 0, fail(ErrNotNewer, "the bundle lists %s (%d of %d) after %s %s: it is not a plan; nothing was written", e, i+1, len(es), e.Kind, cur)
			case c < 0:
				s.skip = cur.String() + " is installed"
			case c == 0:
				s.skip = "already installed"
			}
		}
		if s.skip == "" {
			installs++
			sim[e.Kind], fromBundle[e.Kind] = e.Version, true
			s.pending = base
			base = base || e.Kind == kpkg.KindBase
		}
		weight += float64(e.Size)
		if s.pending {
			weight += float64(e.Size)
		}
	}
	if installs == 0 {
		var l []string
		for _, e := range es {
			l = append(l, e.String())
		}
		return nil, 0, fail(ErrNotNewer, "the box has everything in the bundle, or newer versions (%s); use allow_downgrade to install it anyway; nothing was written", strings.Join(l, ", "))
	}
	var acc float64
	for i := range steps {
		steps[i].lo, steps[i].span = acc/weight, float64(steps[i].e.Size)/weight
		acc += float64(steps[i].e.Size)
	}
	return steps, acc / weight, nil
}

// prepareDir empties PendingDir but for the previous bundle's record and
// checks that what waits for the reboot fits on the data partition.
func (in *Installer) prepareDir(steps []step) error {
	if err := os.MkdirAll(in.PendingDir, 0o755); err != nil {
		return fail(ErrSystem, "the folder for bundles on the data partition cannot be made: %v; nothing was written", err)
	}
	in.clearPending(pendingFile)
	var need int64
	for _, s := range steps {
		if s.pending {
			need += s.e.Size
		}
	}
	var st unix.Statfs_t
	if need == 0 || unix.Statfs(in.PendingDir, &st) != nil {
		return nil
	}
	// Room for job.json and the file system's own blocks too.
	if free := int64(st.Bavail) * int64(st.Bsize); free < need+1<<20 {
		return fail(ErrIncompatible, "the packages that install after the reboot need %d MiB on the data partition, and it has %d MiB free; nothing was written", (need+1<<20-1)>>20, free>>20)
	}
	return nil
}

// stepFailed is the sentence of a bundle that stopped at steps[i] (or
// after its last package, i == len(steps)): what failed, what was
// installed and what was not.
func stepFailed(steps []step, i int, err error, note string) error {
	var done, not []string
	for k, s := range steps {
		switch {
		case s.done != "":
			done = append(done, s.done)
		case k != i && s.skip == "":
			not = append(not, s.e.String())
		}
	}
	msg := "the bundle"
	if i < len(steps) {
		msg = fmt.Sprintf("%s (%d of %d)", steps[i].e, i+1, len(steps))
	}
	tail := ""
	if len(done) > 0 {
		tail += "; installed: " + strings.Join(done, ", ")
	}
	if len(not) > 0 {
		tail += "; not installed: " + strings.Join(not, ", ")
	}
	if note != "" {
		tail += "; " + note
	}
	return fmt.Errorf("%s failed: %w%s", msg, err, tail)
}

// openChecked verifies a package's manifest, checks that it is the one
// bundle.json lists, and that it may install on a box with installed.
func (in *Installer) openChecked(r io.Reader, e bundle.Entry, installed map[kpkg.Kind]kpkg.Version, allowDowngrade bool) (*kpkg.Package, error) {
	p, err := kpkg.Open(r, in.Trusted)
	if err != nil {
		return nil, fmt.Errorf("%w; nothing was written", err)
	}
	m := &p.Manifest
	if m.Kind != e.Kind || m.Name != e.Name || m.Version.Compare(e.Version) != 0 {
		return nil, fmt.Errorf("%w: bundle.json lists %s where the package is %s %s %s; nothing was written", bundle.ErrDamaged, e, m.Kind, m.Name, m.Version)
	}
	if err := in.checkAgainst(p, Options{AllowDowngrade: allowDowngrade, Size: e.Size}, installed); err != nil {
		return nil, err
	}
	return p, nil
}

// receive checks a package that installs after the reboot and saves it as
// PendingDir/name: temp file, fsync, rename.
func (in *Installer) receive(ctx context.Context, j *Job, e bundle.Entry, r io.Reader, name string, installed map[kpkg.Kind]kpkg.Version, allowDowngrade bool) error {
	f, err := os.CreateTemp(in.PendingDir, ".receiving-*")
	if err != nil {
		return fail(ErrSystem, "the data partition cannot take %s: %v", e, err)
	}
	tmp := f.Name()
	saved := false
	defer func() {
		if !saved {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := &progressWriter{ctx: ctx, w: f, job: j, total: e.Size, slot: "the data partition"}
	tee := io.TeeReader(r, w)
	p, err := in.openChecked(tee, e, installed, allowDowngrade)
	if err != nil {
		return err
	}
	j.setMessage("saving it on the data partition")
	// struct{io.Writer} hides io.Discard's ReadFrom, so the package comes
	// through the one large buffer.
	if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, p.Payload(), make([]byte, copyBuffer)); err != nil {
		return fmt.Errorf("saving %s stopped at byte %d: %w", e, w.n, err)
	}
	if err := p.Verified(); err != nil {
		return err
	}
	// The rest of the member (nothing, for a package kpkg wrote), and the
	// bundle's own check of its size and SHA-256.
	if _, err := io.Copy(w, r); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fail(ErrSystem, "saving %s on the data partition: %v", e, err)
	}
	if err := f.Close(); err != nil {
		return fail(ErrSystem, "saving %s on the data partition: %v", e, err)
	}
	if err := os.Rename(tmp, filepath.Join(in.PendingDir, name)); err != nil {
		return fail(ErrSystem, "saving %s on the data partition: %v", e, err)
	}
	saved = true
	if err := atomicfile.SyncDir(in.PendingDir); err != nil {
		return fail(ErrSystem, "saving %s on the data partition: %v", e, err)
	}
	return nil
}

// slot is where a verified package goes: the inactive base slot, or the
// application slot not in use, opened and known to hold the payload.
type slot struct {
	label layout.Label
	name  string // "slot b", "application slot a"
	dev   Device
	keeps string // what stays as it is when the install fails
}

// openSlot opens the slot p goes into and checks that the payload fits.
// Nothing is written yet; the caller closes dev on an error of its own.
func (in *Installer) openSlot(p *kpkg.Package) (*slot, error) {
	m := &p.Manifest
	s := &slot{}
	open := in.OpenSlot
	if m.Kind == kpkg.KindApp {
		s.label, s.keeps = layout.SlotA, "no application was running"
		if active := in.AppSlots.State().CommittedSlot(); active != "" {
			s.label, s.keeps = active.Other(), "the application keeps running from application slot "+string(active)
		}
		s.name, open = "application slot "+string(s.label), in.OpenAppSlot
	} else {
		s.label = in.Running.Other()
		s.name = "slot " + string(s.label)
		s.keeps = fmt.Sprintf("slot %s is left unbootable and the box stays on slot %s", s.label, in.Running)
	}
	dev, size, err := open(s.label)
	if err != nil {
		return nil, fail(ErrSystem, "%s cannot be opened, so nothing was written: %v", s.name, err)
	}
	if m.Payload.Size > size {
		dev.Close()
		return nil, fail(ErrIncompatible, "the payload of %s %s is %d bytes, but %s holds only %d; nothing was written",
			m.Name, m.Version, m.Payload.Size, s.name, size)
	}
	s.dev = dev
	return s, nil
}

// installBase writes a verified and checked base package into the
// inactive slot without staging it; verify, when not nil, runs once the
// slot is read back. It closes the slot and returns its label.
func (in *Installer) installBase(ctx context.Context, j *Job, p *kpkg.Package, s *slot, verify func() error) (layout.Label, error) {
	defer s.dev.Close()
	m := &p.Manifest
	j.setPackage(kpkg.KindBase, m.Version.String(), s.label)
	err := in.write(ctx, p, s.dev, s.label, j)
	if err == nil && verify != nil {
		err = verify()
	}
	if err != nil {
		return "", fmt.Errorf("%w; %s", err, s.keeps)
	}
	return s.label, nil
}

// installApp writes a verified and checked app package into the
// application slot not in use and switches to it, within job j; verify,
// when not nil, runs before the switch. It closes the slot.
func (in *Installer) installApp(ctx context.Context, j *Job, p *kpkg.Package, s *slot, verify func() error) error {
	m := &p.Manifest
	j.setPackage(kpkg.KindApp, m.Version.String(), s.label)
	var err error
	if _, err = in.AppSlots.MarkUnbootable(s.label); err != nil {
		err = fail(ErrSystem, "%s cannot be prepared, so nothing was written: %v", s.name, err)
	}
	// The write and the read-back take 90% of the progress; starting the
	// application and its health check the rest.
	size := m.Payload.Size
	if err == nil {
		err = stream(ctx, p, s.dev, s.name, j, 2*size+size/5, in.log().With("job", j.ID()))
	}
	if err == nil && verify != nil {
		err = verify()
	}
	// The slot is mounted next, which an open (exclusive) device forbids.
	cerr := s.dev.Close()
	if err != nil {
		return fmt.Errorf("%w; %s", err, s.keeps)
	}
	if cerr != nil {
		return fail(ErrSystem, "closing %s failed: %v; %s", s.name, cerr, s.keeps)
	}
	j.setMessage(fmt.Sprintf("starting app %s %s from %s and checking its health", m.Name, m.Version, s.name))
	// Once the slot is written the switch runs to its end (commit or
	// rollback, bounded by the health check's timeout) even if the client
	// goes away.
	if err := in.SwitchApp(context.WithoutCancel(ctx), s.label, m.Version.String()); err != nil {
		return &failure{kind: ErrAppFailed, msg: err.Error()}
	}
	return nil
}

// ResumePending finishes a bundle job after the reboot into its base
// package. The agent calls it once on every boot, after the running slot
// is committed (at once on a boot of a committed slot; after the commit on
// a trial boot; never during one), with the application runtime up:
//
//	if err := in.ResumePending(ctx); err != nil { log it }
//
// It may take as long as the installs take (run it in its own goroutine;
// installs are refused meanwhile), and it may reboot the box when a saved
// package is another base package. Without PendingDir/job.json it does
// nothing. A finished job's record is registered again, so GET
// /api/v1/jobs/{id} answers after any reboot. A running one is registered
// under its id; if the box does not run the base version the bundle
// staged (its trial boot failed and the box rolled back), the job fails and
// the saved packages are removed. Otherwise the saved packages install in
// order, as single uploads do, job.json recording each; the first that
// fails ends the job, and the rest are removed. It returns an error only
// when it cannot read or record the job's state, or the running slot is
// not committed yet.
func (in *Installer) ResumePending(ctx context.Context) error {
	if in.PendingDir == "" {
		return nil
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	pj, err := in.readPending()
	if errors.Is(err, fs.ErrNotExist) {
		in.clearPending("") // an upload the power cut
		return nil
	}
	if err != nil {
		in.clearPending("")
		return fmt.Errorf("the state of the pending bundle cannot be read, so its saved packages were removed and not installed: %w", err)
	}
	j := in.resumeJob(pj)
	log := in.log().With("job", j.ID())
	if goOn, err := in.resumable(pj, j, log); !goOn {
		return err
	}
	in.current.Store(j)
	defer in.current.Store(nil)
	for pj.Next < len(pj.Packages) {
		pp := pj.Packages[pj.Next]
		var left int64
		for _, q := range pj.Packages[pj.Next:] {
			left += q.Size
		}
		span := (1 - pj.Progress) * float64(pp.Size) / float64(left)
		j.window(fmt.Sprintf("installing %d of %d: %s", pp.Index, pj.Total, pp.entry()), pj.Progress, span)
		j.setPackage(pp.Kind, pp.Version.String(), "")
		m, rebootInto, tries, err := in.installSaved(ctx, j, pj, pp)
		if err != nil {
			var not []string
			for _, q := range pj.Packages[pj.Next+1:] {
				not = append(not, q.entry().String())
			}
			msg := fmt.Sprintf("%s (%d of %d) failed: %v", pp.entry(), pp.Index, pj.Total, err)
			if len(pj.Installed) > 0 {
				msg += "; installed: " + strings.Join(pj.Installed, ", ")
			}
			if len(not) > 0 {
				msg += "; not installed: " + strings.Join(not, ", ")
			}
			return in.endPending(pj, j, Failed, msg, log)
		}
		pj.Next++
		pj.Progress += span
		pj.Installed = append(pj.Installed, pp.entry().String())
		if rebootInto != "" {
			// As for the upload: job.json, then the trial boot.
			pj.Base, pj.Step = pp.Version.String(), StepStaging
		}
		if err := in.writePending(pj); err != nil {
			// The next boot installs it again, finds it installed and goes on.
			j.finish(Failed, fmt.Sprintf("%s is installed, but the bundle's state cannot be saved on the data partition (%v); it goes on after the next reboot", pp.entry(), err))
			return fmt.Errorf("recording the bundle of job %s: %w", pj.Job, err)
		}
		_ = os.Remove(filepath.Join(in.PendingDir, pp.File))
		log.Info("bundle package done", "package", pp.entry().String(), "index", pp.Index)
		if rebootInto != "" {
			return in.rebootPending(pj, j, m, pp, rebootInto, tries, log)
		}
		if m != nil {
			in.record(m, inventory.Bundle)
		}
	}
	if pj.Kind == kindInstall {
		return in.endPending(pj, j, Done, fmt.Sprintf("%s passed its trial boot and is committed", strings.Join(pj.Installed, ", ")), log)
	}
	return in.endPending(pj, j, Done, "the bundle is installed: "+strings.Join(pj.Installed, ", "), log)
}

// resumable is the one switch on a pending job's step after a boot: a
// finished job is only a record; one that waits goes on (resuming) if the
// box runs committed the base it staged, and fails otherwise.
func (in *Installer) resumable(pj *pendingJob, j *Job, log *slog.Logger) (bool, error) {
	switch pj.Step {
	case StepDone, StepFailed:
		in.clearPending(pendingFile)
		return false, nil
	case StepStaging, StepStaged, StepResuming:
	default:
		in.clearPending("")
		return false, fmt.Errorf("the pending bundle of job %s is at step %q, which this version does not know; its saved packages were removed and not installed", pj.Job, pj.Step)
	}
	st, _, err := in.Slots.Read()
	if err != nil {
		return false, fmt.Errorf("the boot state cannot be read, so the bundle of job %s waits: %w", pj.Job, err)
	}
	if !st.Slot(in.Running).Good {
		return false, fmt.Errorf("slot %s runs an uncommitted trial boot; the bundle of job %s resumes once it is committed", in.Running, pj.Job)
	}
	if cur, ok := in.installed()[kpkg.KindBase]; !ok || cur.String() != pj.Base {
		running := "another version"
		if ok {
			running = cur.String()
		}
		msg := fmt.Sprintf("base %s did not come up healthy; the box is back on %s", pj.Base, running)
		if pj.Step == StepStaging {
			msg = fmt.Sprintf("the box restarted before the trial boot of base %s was staged; it stays on %s", pj.Base, running)
		}
		if left := pj.Packages[pj.Next:]; len(left) > 0 {
			msg += fmt.Sprintf("; the remaining packages (%s) were not installed", pendingList(left))
		}
		return false, in.endPending(pj, j, Failed, msg, log)
	}
	pj.Step = StepResuming
	return true, nil
}

// installSaved installs a package saved in PendingDir and returns its
// manifest (nil when it was installed already). A base package is written,
// not staged yet: it returns its slot and the tries its trial boot is to be
// staged with.
func (in *Installer) installSaved(ctx context.Context, j *Job, pj *pendingJob, pp pendingPackage) (m *kpkg.Manifest, rebootInto layout.Label, tries int, err error) {
	f, err := os.Open(filepath.Join(in.PendingDir, pp.File))
	if err != nil {
		return nil, "", 0, fail(ErrSystem, "its saved copy cannot be read: %v", err)
	}
	defer f.Close()
	installed := in.installed()
	if cur, ok := installed[pp.Kind]; ok && !pj.AllowDowngrade && cur.Compare(pp.Version) == 0 {
		return nil, "", 0, nil // installed before a power cut kept job.json from saying so
	}
	p, err := in.openChecked(f, pp.entry(), installed, pj.AllowDowngrade)
	if err != nil {
		return nil, "", 0, err
	}
	// Checked before the write: a slot written is staged.
	if tries, err = in.tries(); err != nil {
		return nil, "", 0, err
	}
	sl, err := in.openSlot(p)
	if err != nil {
		return nil, "", 0, err
	}
	if pp.Kind == kpkg.KindApp {
		if err := in.installApp(ctx, j, p, sl, nil); err != nil {
			return nil, "", 0, err
		}
		return &p.Manifest, "", 0, nil
	}
	if rebootInto, err = in.installBase(ctx, j, p, sl, nil); err != nil {
		return nil, "", 0, err
	}
	return &p.Manifest, rebootInto, tries, nil
}

// rebootPending stages the trial boot of a base package a resumed bundle
// wrote into target, with tries, and reboots into it.
func (in *Installer) rebootPending(pj *pendingJob, j *Job, m *kpkg.Manifest, pp pendingPackage, target layout.Label, tries int, log *slog.Logger) error {
	j.window("", 0, 0)
	if err := in.stageTrial(target, m, tries); err != nil {
		pj.Installed = pj.Installed[:len(pj.Installed)-1]
		msg := fmt.Sprintf("%s (%d of %d) failed: it was written to slot %s, but its trial boot could not be staged: %v; the box stays on slot %s", pp.entry(), pp.Index, pj.Total, target, err, in.Running)
		if left := pj.Packages[pj.Next:]; len(left) > 0 {
			msg += fmt.Sprintf("; the remaining packages (%s) were not installed", pendingList(left))
		}
		return in.endPending(pj, j, Failed, msg, log)
	}
	in.record(m, inventory.Bundle)
	pj.Step = StepStaged
	if err := in.writePending(pj); err != nil {
		log.Warn("recording the staged trial boot", "err", err)
	}
	j.setProgress(pj.Progress)
	what := fmt.Sprintf("%s is in slot %s, staged for a trial boot with %d tries", pp.entry(), target, tries)
	then := "the job finishes once it runs"
	if left := pj.Packages[pj.Next:]; len(left) > 0 {
		then = fmt.Sprintf("then installs the %d remaining packages (%s)", len(left), pendingList(left))
	}
	if in.Reboot == nil {
		j.setMessage(fmt.Sprintf("%s; the box boots base %s on the next reboot, %s", what, pp.Version, then))
		return nil
	}
	j.setMessage(fmt.Sprintf("%s; the box reboots into base %s now, %s", what, pp.Version, then))
	log.Info("bundle staged another base; rebooting", "version", pp.Version.String())
	in.reboot(nil, j, what, log)
	return nil
}

// endPending finishes a resumed job, records it in job.json and removes
// the saved packages.
func (in *Installer) endPending(pj *pendingJob, j *Job, s State, msg string, log *slog.Logger) error {
	j.window("", 0, 0)
	j.finish(s, msg)
	if s == Done {
		log.Info(msg)
		pj.Progress = 1
	} else {
		log.Error("bundle install failed", "err", msg)
	}
	pj.Step, pj.Message = StepFailed, msg
	if s == Done {
		pj.Step = StepDone
	}
	err := in.writePending(pj)
	in.clearPending(pendingFile)
	if err != nil {
		return fmt.Errorf("recording the end of the bundle of job %s: %w", pj.Job, err)
	}
	return nil
}

// resumeJob registers the job of job.json under its id.
func (in *Installer) resumeJob(pj *pendingJob) *Job {
	if j, ok := in.jobs().Get(pj.Job); ok {
		return j
	}
	kind := "bundle"
	if pj.Kind == kindInstall {
		kind = kindInstall
	}
	j := &Job{id: pj.Job, kind: kind, state: pj.Step.state(), progress: pj.Progress, message: pj.Message}
	if j.state == Running {
		j.message = fmt.Sprintf("resuming after the reboot into base %s: %d packages left", pj.Base, len(pj.Packages)-pj.Next)
	}
	if pj.Step == StepDone {
		j.progress = 1
	}
	in.jobs().add(j)
	return j
}

// pendingBusy refuses an install while a bundle's job.json says running.
func (in *Installer) pendingBusy() error {
	if in.PendingDir == "" {
		return nil
	}
	pj, err := in.readPending()
	// A single base package staged for a later reboot may be replaced by
	// another: nothing waits on the data partition for it.
	if err != nil || pj.Step.state() != Running || pj.Kind == kindInstall {
		return nil
	}
	what := fmt.Sprintf("it waits for base %s to run", pj.Base)
	if left := pj.Packages[pj.Next:]; len(left) > 0 {
		what = fmt.Sprintf("%s installs once base %s runs", pendingList(left), pj.Base)
	}
	return fail(ErrBusy, "the bundle of job %s is not finished: %s; wait until it is done (GET /api/v1/jobs/%s)", pj.Job, what, pj.Job)
}

func (in *Installer) readPending() (*pendingJob, error) {
	b, err := os.ReadFile(filepath.Join(in.PendingDir, pendingFile))
	if err != nil {
		return nil, err
	}
	var pj pendingJob
	if err := json.Unmarshal(b, &pj); err != nil {
		return nil, fmt.Errorf("%s: %w", pendingFile, err)
	}
	if pj.Job == "" || pj.Next < 0 || pj.Next > len(pj.Packages) {
		return nil, fmt.Errorf("%s is not a bundle's state", pendingFile)
	}
	for _, p := range pj.Packages {
		if p.File == "" || filepath.Base(p.File) != p.File || p.File == pendingFile || strings.HasPrefix(p.File, ".") || p.Size <= 0 {
			return nil, fmt.Errorf("%s names %q, which is not a saved package", pendingFile, p.File)
		}
	}
	return &pj, nil
}

func (in *Installer) writePending(pj *pendingJob) error {
	b, err := json.MarshalIndent(pj, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(in.PendingDir, pendingFile), append(b, '\n'), 0o644)
}

// clearPending removes everything in PendingDir but keep.
func (in *Installer) clearPending(keep string) {
	des, err := os.ReadDir(in.PendingDir)
	if err != nil {
		return
	}
	for _, de := range des {
		if de.Name() != keep {
			if err := os.RemoveAll(filepath.Join(in.PendingDir, de.Name())); err != nil {
				in.log().Warn("removing a pending file", "err", err)
			}
		}
	}
}

func pendingList(ps []pendingPackage) string {
	l := make([]string, len(ps))
	for i, p := range ps {
		l[i] = p.entry().String()
	}
	return strings.Join(l, ", ")
}

// window starts a bundle's package: step before each progress message,
// the package's progress within lo..lo+span of the job's. An empty step
// ends the packages.
func (j *Job) window(step string, lo, span float64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.step, j.lo, j.span = step, lo, span
	if step != "" {
		j.message = step
		j.progress = lo
	}
}

// setPackage says which package a bundle job installs now.
func (j *Job) setPackage(kind kpkg.Kind, version string, slot layout.Label) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.pkg, j.version, j.slot = kind, version, slot
}
