// Package apps runs the box's application from its A/B application slots
// (partitions app-a and app-b), as DESIGN.md's "Slots and boot counting"
// asks: switching needs no reboot. The Manager mounts the active slot
// read-only, reads its app.json (package appspec) and runs the program it
// names as an unprivileged user, restarting it with backoff when it exits.
// Switch moves to a newly written slot and commits it only after its health
// check passes, or goes back to the previous version. The application's
// data folder is the same whichever slot runs, so its data survives updates
// and rollbacks.
//
// The state file (see State) is written atomically; a power cut during a
// switch leaves the box on the previous version at the next start.
//
// A process the Manager starts runs
//   - as UID/GID (DefaultUID and DefaultGID), with no supplementary groups;
//   - with CAP_NET_BIND_SERVICE as its only capability (ambient), and only
//     when the spec lists a port below 1024;
//   - in its own process group, so stopping it stops what it started:
//     SIGTERM, then SIGKILL after the spec's stop timeout;
//   - in DataRoot/<name> (created, owned by the application's user), with
//     DATA_DIR, HOME, APP_DIR, APP_NAME, APP_VERSION and the spec's env;
//   - with its output logged line by line under its name.
package apps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"keel.dev/keel/agent/appdata"
	"keel.dev/keel/agent/sandbox"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/appspec"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// The application's user and group when the Manager names none: a fixed
// unprivileged id, which needs no /etc/passwd.
const (
	DefaultUID = 900
	DefaultGID = 900
)

// Defaults of the Manager's tuning fields.
const (
	DefaultMinBackoff      = 500 * time.Millisecond
	DefaultMaxBackoff      = 30 * time.Second
	DefaultCrashLoopExits  = 5
	DefaultCrashLoopWindow = time.Minute
)

// The states Status reports.
const (
	StateNone         = "none"          // no application is installed
	StateStarting     = "starting"      // its process is being started
	StateRunning      = "running"       // its process runs
	StateRestarting   = "restarting"    // it exited and is restarted after a backoff
	StateCrashLooping = "crash-looping" // it exited CrashLoopExits times within CrashLoopWindow; retried slowly
	StateStopped      = "stopped"       // stopped by the agent (shutdown, or during a switch)
	StateFailed       = "failed"        // its slot could not be mounted or its app.json is invalid
)

// Manager runs the application. Fill in the fields, then call Start once;
// the fields must not change afterwards.
type Manager struct {
	// Slots owns the app state file (e.g. /data/keel/apps/state.json):
	// which slot is active, committed, and what each holds.
	Slots    *slots.AppStore
	RunDir   string // slot s is mounted at RunDir/s, e.g. /run/keel/app
	DataRoot string // the application's data is DataRoot/<name>, e.g. /data/apps
	// Mount mounts slot "a" or "b" read-only at dir, which exists; see
	// BlockMount. An empty slot returns an error wrapping ErrEmptySlot.
	Mount func(slot layout.Label, dir string) error
	// Unmount unmounts dir; see UnmountDir.
	Unmount func(dir string) error
	// UID and GID run the application; 0 means DefaultUID/DefaultGID (an
	// application never runs as root).
	UID, GID uint32
	// SandboxDir, when set, confines the application (package sandbox):
	// its root is built in SandboxDir/<name>. CgroupRoot, when set, is
	// the cgroup v2 hierarchy its cgroup goes in, with Limits; NProc is
	// RLIMIT_NPROC for its user (0: DefaultNProc). The agent's binary must
	// call sandbox.MaybeExec first thing.
	SandboxDir string
	CgroupRoot string
	Limits     sandbox.Limits
	NProc      int
	// Volumes, when set, makes the data folder a volume of its own
	// (package appdata), so the application cannot fill the partition.
	Volumes *appdata.Volumes
	Log     *slog.Logger     // nil: discard
	Now     func() time.Time // nil: time.Now

	MinBackoff      time.Duration // first restart delay; default DefaultMinBackoff
	MaxBackoff      time.Duration // longest restart delay, and a crash loop's; default DefaultMaxBackoff
	CrashLoopExits  int           // default DefaultCrashLoopExits
	CrashLoopWindow time.Duration // default DefaultCrashLoopWindow

	switching sync.Mutex // held for a whole Switch

	mu      sync.Mutex
	ctx     context.Context // Start's: the application's lifetime
	cur     *runner
	mounted map[layout.Label]bool
	failure string // why the active slot is not running, when it is not
	stopped bool
	held    string // why the application is held (Hold); "" when it is not
}

// ErrEmptySlot is wrapped by Mount when a slot holds no application image.
var ErrEmptySlot = errors.New("the slot holds no application image")

func (m *Manager) log() *slog.Logger {
	if m.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Log
}

func (m *Manager) now() time.Time {
	if m.Now == nil {
		return time.Now()
	}
	return m.Now()
}

func (m *Manager) uid() uint32 {
	if m.UID == 0 {
		return DefaultUID
	}
	return m.UID
}

func (m *Manager) gid() uint32 {
	if m.GID == 0 {
		return DefaultGID
	}
	return m.GID
}

func (m *Manager) backoff() (time.Duration, time.Duration) {
	lo, hi := m.MinBackoff, m.MaxBackoff
	if lo <= 0 {
		lo = DefaultMinBackoff
	}
	if hi <= 0 {
		hi = DefaultMaxBackoff
	}
	return lo, max(lo, hi)
}

func (m *Manager) crashLoop() (int, time.Duration) {
	n, w := m.CrashLoopExits, m.CrashLoopWindow
	if n <= 0 {
		n = DefaultCrashLoopExits
	}
	if w <= 0 {
		w = DefaultCrashLoopWindow
	}
	return n, w
}

func (m *Manager) slotDir(slot layout.Label) string { return filepath.Join(m.RunDir, string(slot)) }

// Start reads the state file and starts the active slot's application,
// supervised until ctx ends (or Stop). It returns once the process is
// started, without waiting for its health check. A box whose last switch
// was interrupted goes back to the previous slot; a box with no state yet
// adopts an application an image left in a slot (app-a first). With no
// application anywhere, Start does nothing and returns nil.
func (m *Manager) Start(ctx context.Context) error {
	m.switching.Lock()
	defer m.switching.Unlock()
	m.mu.Lock()
	if m.ctx != nil {
		m.mu.Unlock()
		return errors.New("the application runtime is started already")
	}
	m.ctx = ctx
	m.mounted = map[layout.Label]bool{}
	m.mu.Unlock()

	if _, err := m.Slots.Load(); err != nil {
		m.setFailure(err.Error())
		return err
	}
	log := m.log()
	if result, err := m.Slots.RecordFallback(); err != nil {
		return err
	} else if result != "" {
		log.Warn(result)
	}
	st := m.Slots.State()
	if st.Active == "" {
		for _, slot := range layout.Labels {
			spec, err := m.probe(slot)
			if err != nil {
				if !errors.Is(err, ErrEmptySlot) {
					log.Warn("no application in slot", "slot", slot, "err", err)
				}
				continue
			}
			result := fmt.Sprintf("app %s %s found in slot %s", spec.Name, spec.Version, slot)
			if st, err = m.Slots.Commit(slot, spec.Name, spec.Version, result); err != nil {
				return err
			}
			log.Info(result)
			break
		}
	}
	if st.Active == "" {
		log.Info("no application is installed")
		return nil
	}
	if held := m.Held(); held != "" {
		log.Info("the application is held", "reason", held)
		return nil
	}
	if _, err := m.launch(st.Active); err != nil {
		m.setFailure(err.Error())
		log.Error("the application did not start", "slot", st.Active, "err", err)
		return err
	}
	return nil
}

// probe mounts slot and reads its app.json; on failure it unmounts it.
func (m *Manager) probe(slot layout.Label) (*appspec.Spec, error) {
	if err := m.mount(slot); err != nil {
		return nil, err
	}
	spec, err := readSpec(m.slotDir(slot))
	if err != nil {
		m.unmount(slot)
		return nil, err
	}
	return spec, nil
}

func readSpec(dir string) (*appspec.Spec, error) {
	b, err := os.ReadFile(filepath.Join(dir, appspec.File))
	if err != nil {
		return nil, fmt.Errorf("the slot has no readable %s: %w", appspec.File, err)
	}
	return appspec.Parse(b)
}

func (m *Manager) mount(slot layout.Label) error {
	m.mu.Lock()
	done := m.mounted[slot]
	m.mu.Unlock()
	if done {
		return nil
	}
	dir := m.slotDir(slot)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := m.Mount(slot, dir); err != nil {
		return fmt.Errorf("mount application slot %s: %w", slot, err)
	}
	m.mu.Lock()
	m.mounted[slot] = true
	m.mu.Unlock()
	return nil
}

// unmount unmounts a slot, so it can be written by the next install.
func (m *Manager) unmount(slot layout.Label) {
	m.mu.Lock()
	done := m.mounted[slot]
	m.mu.Unlock()
	if !done {
		return
	}
	if err := m.Unmount(m.slotDir(slot)); err != nil {
		m.log().Error("application slot not unmounted", "slot", slot, "err", err)
		return
	}
	m.mu.Lock()
	delete(m.mounted, slot)
	m.mu.Unlock()
}

// launch mounts slot, reads its spec, prepares the data folder and starts
// the application.
func (m *Manager) launch(slot layout.Label) (*runner, error) {
	r, err := m.prepare(slot)
	if err != nil {
		return nil, err
	}
	return r, m.run(r)
}

// prepare mounts a slot and reads its app.json, everything before the
// start, so that a switch stops the old version only once the new one is
// ready to start.
func (m *Manager) prepare(slot layout.Label) (*runner, error) {
	if err := m.mount(slot); err != nil {
		return nil, err
	}
	dir := m.slotDir(slot)
	spec, err := readSpec(dir)
	if err != nil {
		return nil, fmt.Errorf("slot %s: %w", slot, err)
	}
	data, vol, unenforced, err := m.data(spec)
	if err != nil {
		return nil, err
	}
	r := m.newRunner(slot, dir, data, spec)
	r.vol, r.volUnenforced = vol, unenforced
	return r, nil
}

// warm reads r's program once, while the old version still serves: its
// pages come from the compressed slot, and a switch's downtime should not
// wait for them. A start with nothing serving gains nothing from it.
func warm(r *runner) {
	if f, err := os.Open(filepath.Join(r.slotDir, filepath.FromSlash(path.Clean(r.spec.Command)))); err == nil {
		io.Copy(io.Discard, f)
		f.Close()
	}
}

// run makes r the current application and starts it.
func (m *Manager) run(r *runner) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.stopped {
		return errors.New("the application runtime is stopped")
	}
	m.cur, m.failure = r, ""
	r.start(m.ctx)
	return nil
}

// data gives the application its data folder: its volume when the
// Manager has Volumes. A volume that was never made (the folder still
// holds the files) and cannot be made now leaves the application on its
// plain folder, with the reason in its confinement's unenforced limits;
// a volume that exists and cannot be mounted keeps the application
// stopped, since its folder under the volume is empty.
func (m *Manager) data(spec *appspec.Spec) (dir string, vol *appdata.Volume, unenforced string, err error) {
	if m.Volumes == nil {
		dir, err := m.dataDir(spec.Name)
		return dir, nil, "", err
	}
	vol, err = m.Volumes.Open(spec.Name, int64(spec.DataMiB)<<20, int(m.uid()), int(m.gid()))
	if err == nil {
		return vol.Dir, vol, "", nil
	}
	if m.Volumes.Made(spec.Name) {
		return "", nil, "", err
	}
	m.log().Error("the application runs on its plain data folder, without a size limit", "app", spec.Name, "err", err)
	dir, derr := m.dataDir(spec.Name)
	return dir, nil, "data volume: " + err.Error(), derr
}

// dataDir creates DataRoot/name for the application's user.
func (m *Manager) dataDir(name string) (string, error) {
	if err := os.MkdirAll(m.DataRoot, 0o755); err != nil {
		return "", fmt.Errorf("application data: %w", err)
	}
	dir := filepath.Join(m.DataRoot, name)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("application data: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", fmt.Errorf("application data: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("application data: %s is not a folder", dir)
	}
	if err := os.Lchown(dir, int(m.uid()), int(m.gid())); err != nil {
		return "", fmt.Errorf("application data: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("application data: %w", err)
	}
	return dir, nil
}

// stopCurrent stops the running application, if any, and waits for it.
func (m *Manager) stopCurrent() {
	m.mu.Lock()
	r := m.cur
	m.cur = nil
	m.mu.Unlock()
	if r != nil {
		r.stop()
	}
}

func (m *Manager) setFailure(s string) {
	m.mu.Lock()
	m.failure = s
	m.mu.Unlock()
}

// Switch moves the application to newSlot, which an install has just
// written with version: it stops the running application, mounts newSlot,
// starts it and runs its health check until it passes within the spec's
// timeout, then commits newSlot. Otherwise it stops the new version, goes
// back to the previous slot and restarts the previous version, and returns
// an error whose message is the sentence recorded as the last result
// ("app 2.0.1 failed its health check (…); back on 2.0.0"). ctx bounds the
// health check: a cancelled switch goes back too.
func (m *Manager) Switch(ctx context.Context, newSlot layout.Label, version string) error {
	m.switching.Lock()
	defer m.switching.Unlock()
	if !newSlot.Valid() {
		return fmt.Errorf("application slot %q is neither a nor b", newSlot)
	}
	m.mu.Lock()
	started, stopped := m.ctx != nil, m.stopped
	m.mu.Unlock()
	if !started || stopped {
		return errors.New("the application runtime is not running")
	}
	if held := m.Held(); held != "" {
		return fmt.Errorf("app %s was not started: the application is held (%s)", version, held)
	}
	st := m.Slots.State()
	old := st.CommittedSlot()
	oldInfo := st.Slot(old)
	log := m.log().With("slot", newSlot, "version", version)
	if _, err := m.Slots.StageTrial(newSlot, version); err != nil {
		return fmt.Errorf("app %s was not started: %w; %s", version, err, m.stillOn(oldInfo))
	}
	log.Info("switching application", "from_slot", old, "from_version", oldInfo.Version)
	// A slot written by an install must not be mounted from before.
	m.unmount(newSlot)
	// The old version serves until the new one is mounted and read.
	var spec *appspec.Spec
	r, err := m.prepare(newSlot)
	what := "could not be started"
	if err == nil && r.spec.Version != version {
		err = fmt.Errorf("its %s says version %s", appspec.File, r.spec.Version)
	}
	if err == nil {
		warm(r)
	}
	m.stopCurrent()
	if err == nil {
		spec = r.spec
		if err = m.run(r); err == nil {
			what = "failed its health check"
			err = m.waitHealthy(ctx, r)
		}
	}
	if err == nil {
		result := fmt.Sprintf("app %s %s passed its health check and runs from slot %s", spec.Name, spec.Version, newSlot)
		if oldInfo.Version != "" {
			result += " (was " + oldInfo.Version + ")"
		}
		if _, err := m.Slots.Commit(newSlot, spec.Name, spec.Version, result); err != nil {
			// Running but not committed: the next start goes back.
			log.Error("the application runs but its commit was not saved", "err", err)
			return fmt.Errorf("app %s runs, but its commit could not be saved (%v): the next restart goes back to %s", version, err, oldInfo.Version)
		}
		log.Info(result)
		if old != "" {
			m.unmount(old)
		}
		return nil
	}

	// Back to the previous version.
	m.stopCurrent()
	m.unmount(newSlot)
	result := fmt.Sprintf("app %s %s (%v); ", version, what, err)
	name := ""
	if spec != nil {
		name = spec.Name
	}
	if old == "" {
		result += "no application runs"
	} else if r, lerr := m.launch(old); lerr != nil {
		m.setFailure(lerr.Error())
		result += fmt.Sprintf("%s could not be restarted either: %v", oldInfo.Version, lerr)
	} else if herr := m.waitHealthy(context.WithoutCancel(ctx), r); herr != nil {
		// It keeps running, supervised, as it did before the switch.
		result += fmt.Sprintf("back on %s, which fails its health check too (%v)", oldInfo.Version, herr)
	} else {
		result += "back on " + oldInfo.Version
	}
	if _, serr := m.Slots.MarkBad(newSlot, name, version, result); serr != nil {
		log.Error("the rollback was not saved", "err", serr)
		result += fmt.Sprintf(" (the state file could not be written: %v)", serr)
	}
	log.Error(result)
	return errors.New(result)
}

func (m *Manager) stillOn(old slots.AppSlot) string {
	if old.Version == "" {
		return "no application runs"
	}
	return old.Version + " keeps running"
}

// WaitHealthy runs the running application's health check until it passes
// within its timeout (a base slot's trial boot asks it). No application
// installed is healthy; one installed but not running is not.
func (m *Manager) WaitHealthy(ctx context.Context) error {
	m.mu.Lock()
	r, failure, held := m.cur, m.failure, m.held
	m.mu.Unlock()
	st := m.Slots.State()
	if r == nil {
		if st.Active == "" || held != "" {
			return nil // none installed, or held on purpose
		}
		if failure == "" {
			failure = "it is not running"
		}
		return fmt.Errorf("app %s is not running: %s", st.Slot(st.Active).Version, failure)
	}
	if err := m.waitHealthy(ctx, r); err != nil {
		return fmt.Errorf("app %s %s failed its health check: %w", r.spec.Name, r.spec.Version, err)
	}
	return nil
}

// Stop stops the application and unmounts its slots; Start cannot be
// called again. The agent calls it at shutdown.
func (m *Manager) Stop() error {
	m.switching.Lock()
	defer m.switching.Unlock()
	m.mu.Lock()
	m.stopped = true
	m.mu.Unlock()
	m.stopCurrent()
	var mounted []layout.Label
	m.mu.Lock()
	for s := range m.mounted {
		mounted = append(mounted, s)
	}
	m.mu.Unlock()
	for _, s := range mounted {
		m.unmount(s)
	}
	if m.Volumes != nil {
		return m.Volumes.Close()
	}
	return nil
}

// Status is the application's part of GET /api/v1/status.
type Status struct {
	Name       string       `json:"name,omitempty"`
	Version    string       `json:"version,omitempty"`
	Slot       layout.Label `json:"slot,omitempty"`
	State      string       `json:"state"` // one of the State constants
	PID        int          `json:"pid,omitempty"`
	Restarts   int          `json:"restarts"`
	LastExit   string       `json:"last_exit,omitempty"` // how its process last ended
	Error      string       `json:"error,omitempty"`     // why it is not running, when it failed
	Held       string       `json:"held,omitempty"`      // why it is held (state "held")
	LastResult string       `json:"last_result,omitempty"`
	// Slots is what each slot holds.
	Slots map[layout.Label]slots.AppSlot `json:"slots,omitempty"`
	// Confinement says how the running application is held in.
	Confinement *Confinement `json:"confinement,omitempty"`
}

// Status returns a snapshot.
func (m *Manager) Status() Status {
	m.mu.Lock()
	r, failure, stopped, held := m.cur, m.failure, m.stopped, m.held
	m.mu.Unlock()
	st := m.Slots.State()
	s := Status{State: StateNone, LastResult: st.LastResult, Slots: st.Slots, Error: failure}
	if len(s.Slots) == 0 {
		s.Slots = nil
	}
	if st.Active != "" {
		info := st.Slot(st.Active)
		s.Name, s.Version, s.Slot = info.Name, info.Version, st.Active
		s.State = StateStopped
		if failure != "" {
			s.State = StateFailed
		}
	}
	if r != nil {
		s.Name, s.Version, s.Slot = r.spec.Name, r.spec.Version, r.slot
		_, window := m.crashLoop()
		s.State, s.PID, s.Restarts, s.LastExit = r.status(m.now(), window)
		r.mu.Lock()
		s.Confinement = r.confinement()
		r.mu.Unlock()
	} else if stopped && st.Active != "" {
		s.State = StateStopped
	} else if held != "" && st.Active != "" {
		s.State, s.Held = StateHeld, held
	}
	return s
}

// Installed returns the committed application's name and version.
func (m *Manager) Installed() (name string, version kpkg.Version, ok bool) {
	st := m.Slots.State()
	slot := st.CommittedSlot()
	info := st.Slot(slot)
	if slot == "" || info.Version == "" {
		return "", kpkg.Version{}, false
	}
	v, err := kpkg.ParseVersion(info.Version)
	if err != nil {
		return "", kpkg.Version{}, false
	}
	return info.Name, v, true
}
