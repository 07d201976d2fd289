package apps

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/appdata"
	"keel.dev/keel/agent/sandbox"
	"keel.dev/keel/agent/supervisor"
	"keel.dev/keel/image/appspec"
	"keel.dev/keel/image/layout"
)

// runner runs one application from one slot, restarting it when it exits,
// until its context ends.
type runner struct {
	m       *Manager
	spec    *appspec.Spec
	slot    layout.Label
	slotDir string
	dataDir string
	log     *slog.Logger
	cancel  context.CancelFunc
	done    chan struct{}

	// The sandbox, when the Manager asks for one; only loop touches them
	// (status reads them under mu).
	root *sandbox.Root
	cg   *sandbox.Cgroup
	cgFD *os.File
	// vol is the data folder's volume; volUnenforced says why there is
	// none when the Manager asked for one.
	vol           *appdata.Volume
	volUnenforced string

	mu        sync.Mutex
	pid       int
	startedAt time.Time
	waiting   bool // between an exit and the next start
	restarts  int
	exits     []time.Time // within the crash-loop window
	crashLoop bool
	lastExit  string
}

func (m *Manager) newRunner(slot layout.Label, slotDir, dataDir string, spec *appspec.Spec) *runner {
	return &runner{
		m: m, spec: spec, slot: slot, slotDir: slotDir, dataDir: dataDir,
		log:  m.log().With("app", spec.Name, "version", spec.Version, "slot", slot),
		done: make(chan struct{}),
	}
}

func (r *runner) start(ctx context.Context) {
	ctx, r.cancel = context.WithCancel(ctx)
	supervisor.Go(r.log, "application runner", func() { r.loop(ctx) })
}

// stop ends the application (SIGTERM, then SIGKILL after its stop
// timeout) and returns once it is gone.
func (r *runner) stop() {
	r.cancel()
	<-r.done
}

func (r *runner) loop(ctx context.Context) {
	defer close(r.done)
	defer func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.release()
	}()
	minB, maxB := r.m.backoff()
	n, window := r.m.crashLoop()
	backoff := minB
	for {
		started := r.m.now()
		how := r.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		now := r.m.now()
		ran := now.Sub(started)
		r.mu.Lock()
		r.pid, r.waiting, r.lastExit = 0, true, how
		r.restarts++
		r.exits = append(r.exits, now)
		r.exits = slices.DeleteFunc(r.exits, func(t time.Time) bool { return now.Sub(t) > window })
		if ran >= window {
			// It ran a good while: a new failure, not a loop.
			r.crashLoop, backoff = false, minB
		}
		entered := len(r.exits) >= n && !r.crashLoop
		if entered {
			r.crashLoop = true
		}
		if r.crashLoop {
			backoff = maxB
		}
		r.mu.Unlock()
		if entered {
			r.log.Error("the application is crash-looping; it is retried slowly", "exits", n, "within", window, "last", how, "retry_every", maxB)
		} else {
			r.log.Warn("the application exited; restarting", "how", how, "ran", ran.Round(time.Millisecond), "in", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxB)
	}
}

// runOnce starts the application and waits for it to exit, or stops it
// when ctx ends. It says how the process ended.
func (r *runner) runOnce(ctx context.Context) string {
	r.mu.Lock()
	err := r.confine()
	r.mu.Unlock()
	if err != nil {
		r.log.Error("the application's sandbox could not be set up; it is not started", "err", err)
		return "could not start: " + err.Error()
	}
	cmd := r.m.command(context.Background(), r, r.spec.Command, r.spec.Args, r.bindsLowPorts())
	stdout, outW, err := os.Pipe()
	if err != nil {
		return "could not start: " + err.Error()
	}
	stderr, errW, err := os.Pipe()
	if err != nil {
		stdout.Close()
		outW.Close()
		return "could not start: " + err.Error()
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	// The child has its own copies of the write ends.
	outW.Close()
	errW.Close()
	if err != nil {
		stdout.Close()
		stderr.Close()
		r.log.Error("the application could not be started", "err", err)
		return "could not start: " + err.Error()
	}
	supervisor.Go(r.log, "application stdout", func() { r.pump(stdout, "stdout") })
	supervisor.Go(r.log, "application stderr", func() { r.pump(stderr, "stderr") })
	pid := cmd.Process.Pid
	r.mu.Lock()
	r.pid, r.startedAt, r.waiting = pid, r.m.now(), false
	r.mu.Unlock()
	r.log.Info("application started", "pid", pid, "uid", r.m.uid(), "cap_net_bind_service", r.bindsLowPorts())

	waitc := make(chan error, 1)
	go func() { waitc <- cmd.Wait() }()
	select {
	case err := <-waitc:
		// Whatever it left in its group, or anywhere, goes with it.
		unix.Kill(-pid, unix.SIGKILL)
		r.killAll()
		return exitString(err)
	case <-ctx.Done():
	}
	stopTimeout := r.spec.StopTimeout.D()
	unix.Kill(-pid, unix.SIGTERM)
	var how string
	select {
	case err := <-waitc:
		how = exitString(err)
	case <-time.After(stopTimeout):
		r.log.Warn("the application did not stop after SIGTERM; killing it", "stop_timeout", stopTimeout)
		unix.Kill(-pid, unix.SIGKILL)
		how = exitString(<-waitc)
	}
	unix.Kill(-pid, unix.SIGKILL)
	r.killAll()
	r.mu.Lock()
	r.pid, r.lastExit = 0, "stopped ("+how+")"
	r.mu.Unlock()
	r.log.Info("application stopped", "how", how)
	return how
}

// pump logs the application's output line by line, under its name.
func (r *runner) pump(f *os.File, stream string) {
	defer f.Close()
	pumpLines(r.log, f, stream, r.m.now)
}

// bindsLowPorts says whether the spec lists a port below 1024, the only
// reason the application gets CAP_NET_BIND_SERVICE.
func (r *runner) bindsLowPorts() bool {
	return slices.ContainsFunc(r.spec.Ports, func(p int) bool { return p < 1024 })
}

// command prepares a program of the slot to run as the application's
// user, in its own process group, in the data folder, with the
// application's environment.
func (m *Manager) command(ctx context.Context, r *runner, prog string, args []string, lowPorts bool) *exec.Cmd {
	full := filepath.Join(r.slotDir, filepath.FromSlash(path.Clean(prog)))
	cmd := exec.CommandContext(ctx, full, args...)
	cmd.Args[0] = prog
	cmd.Dir = r.dataDir
	cmd.Env = env(r.spec, r.slotDir, r.dataDir)
	attr := &syscall.SysProcAttr{
		Setpgid:    true,
		Credential: &syscall.Credential{Uid: m.uid(), Gid: m.gid(), Groups: []uint32{}},
	}
	if lowPorts {
		attr.AmbientCaps = []uintptr{unix.CAP_NET_BIND_SERVICE}
	}
	r.mu.Lock()
	root, cgFD := r.root, r.cgFD
	r.mu.Unlock()
	if root != nil {
		// The slot and the data folder have the same paths inside the
		// root; the agent binary there confines the process, then runs
		// the program.
		cmd.Path = sandbox.ExecPath
		cmd.Args = sandbox.ExecArgs(m.nproc(), full, args)
		attr.Chroot = root.Dir
	}
	if cgFD != nil {
		attr.UseCgroupFD, attr.CgroupFD = true, int(cgFD.Fd())
	}
	cmd.SysProcAttr = attr
	return cmd
}

func env(spec *appspec.Spec, slotDir, dataDir string) []string {
	e := []string{
		"PATH=" + filepath.Join(slotDir, "bin") + ":/usr/bin:/bin:/bbin",
		"HOME=" + dataDir,
		"DATA_DIR=" + dataDir,
		"APP_DIR=" + slotDir,
		"APP_NAME=" + spec.Name,
		"APP_VERSION=" + spec.Version,
	}
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e = append(e, k+"="+spec.Env[k])
	}
	return e
}

// exitString says how a process ended. PID 1's reaper may collect a child
// before its Wait does; its status is then unknown.
func exitString(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "exit status 0"
	case errors.As(err, &ee):
		return ee.ProcessState.String()
	case errors.Is(err, unix.ECHILD):
		return "exited (status unknown)"
	}
	return err.Error()
}

// status is the runner's part of Status.
func (r *runner) status(now time.Time, window time.Duration) (state string, pid, restarts int, lastExit string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.pid != 0 && (!r.crashLoop || now.Sub(r.startedAt) >= window):
		state = StateRunning
	case r.crashLoop:
		state = StateCrashLooping
	case r.waiting:
		state = StateRestarting
	default:
		state = StateStarting
	}
	return state, r.pid, r.restarts, r.lastExit
}

func (r *runner) running() (pid int, since time.Time, lastExit string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pid, r.startedAt, r.lastExit
}
