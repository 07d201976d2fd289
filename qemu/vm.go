package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timeouts for talking to QEMU itself (not to the guest).
const (
	qmpConnectTimeout = 30 * time.Second
	qmpCommandTimeout = 10 * time.Second
	// A power cut must be quick even when QEMU is wedged: quit gets a
	// short time before SIGKILL.
	quitTimeout = 3 * time.Second
	exitTimeout = 5 * time.Second
	// portAttempts bounds retries when the free port picked for HTTPS was
	// taken before QEMU could bind it.
	portAttempts = 3
)

// VM is one running (or exited) QEMU. Its methods are safe for concurrent
// use.
type VM struct {
	cfg     Config // with defaults applied and KVM resolved
	files   runFiles
	workDir string
	port    int
	args    []string
	logPath string
	boot    int // 1, then 2 after a Restart, ...
	logger  *slog.Logger

	cmd     *exec.Cmd
	started time.Time      // just before QEMU's process was started
	stdin   io.WriteCloser // nil when Interactive
	con     *console
	stderr  *tailBuffer
	qmp     *qmp
	exited  chan struct{} // closed once QEMU has exited and its output is in
	// exitErr and logErr are valid once exited is closed.
	exitErr error
	logErr  error

	mu         sync.Mutex
	stopping   bool     // the harness cut the power, so a kill is no failure
	closed     bool     // Close was called
	removeDirs []string // temporary directories Close removes
}

// errPortTaken marks a start that failed because the forwarded port was in
// use, which Start retries with another port when it picked the port itself.
var errPortTaken = errors.New("qemu: HTTPS host port in use")

// Start checks cfg, prepares the overlay disk and firmware variables in
// cfg.WorkDir, and starts QEMU. It returns once QMP answers; the guest is
// then booting. ctx bounds the VM's life: when it is done, QEMU is stopped.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if KVMFromEnv(os.Getenv) {
		c.KVM = true
	}
	if c.Interactive && c.Console == nil {
		c.Console = os.Stdout
	}
	system, img, err := findTools()
	if err != nil {
		return nil, err
	}
	if !c.BIOS {
		if err := checkFirmware(OVMFCode, OVMFVars); err != nil {
			return nil, err
		}
	}
	// Absolute paths, so that a Restart from another directory still finds
	// them.
	for _, f := range []struct {
		what string
		path *string
	}{{"kernel", &c.Kernel}, {"initrd", &c.Initrd}} {
		if *f.path == "" {
			continue
		}
		if _, err := os.Stat(*f.path); err != nil {
			return nil, fmt.Errorf("qemu: %s: %w", f.what, err)
		}
		if *f.path, err = filepath.Abs(*f.path); err != nil {
			return nil, fmt.Errorf("qemu: %s: %w", f.what, err)
		}
	}

	var tempDirs []string
	ok := false
	defer func() {
		if !ok {
			for _, d := range tempDirs {
				os.RemoveAll(d)
			}
		}
	}()
	workDir := c.WorkDir
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "keel-vm-"); err != nil {
			return nil, fmt.Errorf("qemu: work directory: %w", err)
		}
		tempDirs = append(tempDirs, workDir)
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: work directory: %w", err)
	}
	if workDir, err = filepath.Abs(workDir); err != nil {
		return nil, fmt.Errorf("qemu: work directory: %w", err)
	}

	var files runFiles
	if c.Image != "" {
		files.Overlay = filepath.Join(workDir, "disk.qcow2")
		if err := createOverlay(ctx, img, c.Image, files.Overlay, c.DiskSizeMiB); err != nil {
			return nil, err
		}
	}
	if len(c.ReadErrors) > 0 && files.Overlay != "" {
		var rules strings.Builder
		for _, sec := range c.ReadErrors {
			fmt.Fprintf(&rules, "[inject-error]\nevent = \"none\"\niotype = \"read\"\nsector = \"%d\"\nerrno = \"5\"\n\n", sec)
		}
		files.Blkdebug = filepath.Join(workDir, "blkdebug.conf")
		if err := os.WriteFile(files.Blkdebug, []byte(rules.String()), 0o644); err != nil {
			return nil, fmt.Errorf("qemu: blkdebug rules: %w", err)
		}
	}
	if !c.BIOS {
		files.OVMFCode = OVMFCode
		files.OVMFVars = filepath.Join(workDir, "OVMF_VARS.fd")
		if err := copyFile(OVMFVars, files.OVMFVars); err != nil {
			return nil, err
		}
	}
	sockDir, temporary, err := socketDir(workDir)
	if err != nil {
		return nil, err
	}
	if temporary {
		tempDirs = append(tempDirs, sockDir)
	}
	files.QMP = filepath.Join(sockDir, "qmp.sock")

	vm, err := launch(ctx, system, c, files, workDir, 1)
	if err != nil {
		return nil, err
	}
	vm.removeDirs = tempDirs
	ok = true
	return vm, nil
}

// Restart boots a new QEMU on this VM's disk and UEFI variables, as they
// were left, with the same configuration and HTTPS port: a power cycle, e.g.
// after PowerCut. The VM must have exited, and not been closed if Start
// made its WorkDir. The new VM takes over the temporary directories, so
// Close on this one no longer removes them.
func (vm *VM) Restart(ctx context.Context) (*VM, error) {
	select {
	case <-vm.exited:
	default:
		return nil, fmt.Errorf("qemu: restart: the VM is still running (PowerCut or Wait first)")
	}
	if _, err := os.Stat(vm.workDir); err != nil {
		return nil, fmt.Errorf("qemu: restart: work directory gone (closed?): %w", err)
	}
	system, _, err := findTools()
	if err != nil {
		return nil, err
	}
	c := vm.cfg
	c.HTTPSPort = vm.port
	nvm, err := launch(ctx, system, c, vm.files, vm.workDir, vm.boot+1)
	if err != nil {
		return nil, fmt.Errorf("qemu: restart: %w", err)
	}
	vm.mu.Lock()
	nvm.removeDirs, vm.removeDirs = vm.removeDirs, nil
	vm.mu.Unlock()
	return nvm, nil
}

// launch starts QEMU, retrying with another port when it picked the HTTPS
// port itself and someone took it first.
func launch(ctx context.Context, system string, c Config, files runFiles, workDir string, boot int) (*VM, error) {
	pick := c.HTTPSPort == 0
	for attempt := 1; ; attempt++ {
		port := c.HTTPSPort
		if pick {
			var err error
			if port, err = freePort(); err != nil {
				return nil, err
			}
		}
		vm, err := run(ctx, system, c, files, workDir, boot, port)
		if err == nil {
			return vm, nil
		}
		if !pick || attempt == portAttempts || !errors.Is(err, errPortTaken) {
			return nil, err
		}
	}
}

// run starts one QEMU process and connects to its QMP socket.
func run(ctx context.Context, system string, c Config, files runFiles, workDir string, boot, port int) (*VM, error) {
	logger := c.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	vm := &VM{
		cfg:     c,
		files:   files,
		workDir: workDir,
		port:    port,
		args:    buildArgs(c, files, port),
		logPath: filepath.Join(workDir, "serial.log"),
		boot:    boot,
		logger:  logger,
		stderr:  &tailBuffer{max: 16 << 10},
		exited:  make(chan struct{}),
	}
	if boot > 1 {
		vm.logPath = filepath.Join(workDir, "serial-"+strconv.Itoa(boot)+".log")
	}
	// A socket file left by an earlier QEMU would make bind fail.
	if err := os.Remove(files.QMP); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("qemu: remove stale QMP socket: %w", err)
	}
	logFile, err := os.Create(vm.logPath)
	if err != nil {
		return nil, fmt.Errorf("qemu: serial log: %w", err)
	}
	vm.con = newConsole(logFile, c.Console)

	cmd := exec.CommandContext(ctx, system, vm.args...)
	cmd.Stdout = vm.con
	cmd.Stderr = vm.stderr
	// When ctx ends, SIGTERM lets QEMU exit cleanly (and restore the
	// terminal in interactive mode); WaitDelay then kills it.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	// If this process dies (a test binary hitting its timeout), QEMU goes
	// with it instead of burning CPU for ever.
	death := syscall.SIGKILL
	if c.Interactive {
		death = syscall.SIGTERM // restores the terminal
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: death}
	if c.Segment != nil {
		cmd.ExtraFiles = []*os.File{c.Segment}
	}
	if c.Interactive {
		cmd.Stdin = os.Stdin
	} else if vm.stdin, err = cmd.StdinPipe(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("qemu: stdin pipe: %w", err)
	}
	vm.cmd = cmd

	logger.Debug("starting QEMU", "cmd", system+" "+strings.Join(vm.args, " "))
	vm.started = time.Now()
	// Pdeathsig is sent when the thread that forked QEMU exits, not the
	// process: Go ends a thread whose goroutine locked it and returned
	// (netcfg.NS.Do does, for every socket a test opens in a namespace),
	// and if that thread had forked QEMU, QEMU died with it. QEMU is
	// forked from a thread locked for its whole life instead.
	startErr := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		// Wait returns only after QEMU's stdout is fully copied into the
		// console, so Expect sees everything once exited is closed.
		vm.exitErr = cmd.Wait()
		vm.logErr = logFile.Close()
		close(vm.exited)
	}()
	if err := <-startErr; err != nil {
		logFile.Close()
		return nil, fmt.Errorf("qemu: start %s: %w", system, err)
	}

	vm.qmp, err = dialQMP(files.QMP, time.Now().Add(qmpConnectTimeout), vm.exited, func(ev Event) {
		logger.Info("QMP event", "event", ev.Name, "data", string(ev.Data))
	})
	if err != nil {
		// A QEMU that rejects its configuration may drop the QMP
		// connection a moment before it exits: give it that moment.
		exitedByItself := false
		select {
		case <-vm.exited:
			exitedByItself = true
		case <-time.After(2 * time.Second):
			cmd.Process.Kill()
			<-vm.exited
		}
		if vm.stdin != nil {
			vm.stdin.Close()
		}
		msg := strings.TrimSpace(vm.stderr.String())
		if !exitedByItself {
			return nil, fmt.Errorf("qemu: start: %w; QEMU said: %s", err, msg)
		}
		// QEMU rejected its configuration: its own message says why, the
		// QMP error would only distract.
		if strings.Contains(msg, "host forwarding rule") && strings.Contains(msg, strconv.Itoa(port)) {
			return nil, fmt.Errorf("%w: 127.0.0.1:%d; QEMU said: %s", errPortTaken, port, msg)
		}
		return nil, fmt.Errorf("qemu: QEMU exited at start (%v): %s", vm.exitErr, msg)
	}
	return vm, nil
}

// HTTPSPort is the host port on 127.0.0.1 that reaches the guest's tcp/443.
func (vm *VM) HTTPSPort() int { return vm.port }

// LogPath is the serial log file: the raw bytes the guest wrote to ttyS0.
func (vm *VM) LogPath() string { return vm.logPath }

// DiskPath is the overlay the guest writes to; it stays after the VM exits,
// for inspection (e.g. `qemu-img convert -O raw`, which follows the
// backing chain to the image). Empty without an image.
func (vm *VM) DiskPath() string { return vm.files.Overlay }

// WorkDir is where the VM's files are.
func (vm *VM) WorkDir() string { return vm.workDir }

// Args is QEMU's command line, without the program name.
func (vm *VM) Args() []string { return append([]string(nil), vm.args...) }

// Output returns the serial output so far, with carriage returns and
// terminal escape sequences removed (LogPath has the raw bytes).
func (vm *VM) Output() string { return vm.con.Output() }

// Stderr returns the end of QEMU's own messages (warnings, errors).
func (vm *VM) Stderr() string { return vm.stderr.String() }

// Exited is closed when QEMU has exited.
func (vm *VM) Exited() <-chan struct{} { return vm.exited }

// Expect waits for re to match serial output that comes after the previous
// match (an expect-style cursor) and returns the match and its submatches.
// The output it scans is Output's: lines end in "\n" and escape sequences
// are gone. On timeout, or if QEMU exits first, the error shows the last
// 2 KB of console output.
func (vm *VM) Expect(re string, timeout time.Duration) ([]string, error) {
	_, subs, err := vm.ExpectAny(timeout, re)
	return subs, err
}

// ExpectAny is Expect for several patterns: it returns the index of the one
// that matches earliest in the output, and its submatches.
func (vm *VM) ExpectAny(timeout time.Duration, res ...string) (int, []string, error) {
	if len(res) == 0 {
		return -1, nil, fmt.Errorf("qemu: expect: no pattern")
	}
	compiled := make([]*regexp.Regexp, len(res))
	for i, s := range res {
		re, err := regexp.Compile(s)
		if err != nil {
			return -1, nil, fmt.Errorf("qemu: expect: %w", err)
		}
		compiled[i] = re
	}
	return vm.con.expect(compiled, timeout, vm.exited)
}

// Started is when QEMU's process was started: the zero of a boot's wall
// time.
func (vm *VM) Started() time.Time { return vm.started }

// SeenAt reports when the first match of re in the serial output (all of
// it, whatever Expect has consumed) arrived on the host's clock, and its
// submatches; false if nothing matches yet.
func (vm *VM) SeenAt(re *regexp.Regexp) (time.Time, []string, bool) {
	return vm.con.seenAt(re)
}

// Send types s into the serial console. Not available in interactive mode,
// where the terminal owns the console's input.
func (vm *VM) Send(s string) error {
	if vm.stdin == nil {
		return fmt.Errorf("qemu: send: the console is interactive")
	}
	if _, err := io.WriteString(vm.stdin, s); err != nil {
		return fmt.Errorf("qemu: send to the serial console: %w", err)
	}
	return nil
}

// QMP runs a QMP command (e.g. "query-status") and returns its result.
func (vm *VM) QMP(command string, args any) (json.RawMessage, error) {
	select {
	case <-vm.exited:
		return nil, fmt.Errorf("qemu: %s: the VM is not running", command)
	default:
	}
	return vm.qmp.execute(command, args, qmpCommandTimeout)
}

// Events returns the QMP events seen so far (SHUTDOWN, RESET, POWERDOWN,
// WATCHDOG, ...), oldest first.
func (vm *VM) Events() []Event { return vm.qmp.eventsSoFar() }

// ThrottleWrites limits the disk's writes (write-zeroes included) to bps
// bytes a second, 0 lifts the limit: a slow disk, so that a test can cut
// the power in the middle of a long write. It lasts until QEMU exits.
func (vm *VM) ThrottleWrites(bps int64) error {
	_, err := vm.QMP("block_set_io_throttle", map[string]any{
		"device": "d0", "bps": 0, "bps_rd": 0, "bps_wr": bps, "iops": 0, "iops_rd": 0, "iops_wr": 0,
	})
	if err != nil {
		return fmt.Errorf("qemu: throttle the disk's writes: %w", err)
	}
	return nil
}

// SetLink plugs (up) or pulls the cable of the segment's NIC
// (Config.Segment): the guest sees its carrier go, and nothing crosses.
func (vm *VM) SetLink(up bool) error {
	if vm.cfg.Segment == nil {
		return errors.New("qemu: set link: the VM has no segment NIC")
	}
	if _, err := vm.QMP("set_link", map[string]any{"name": SegmentNIC, "up": up}); err != nil {
		return fmt.Errorf("qemu: set link: %w", err)
	}
	return nil
}

// Signal sends sig to QEMU's process: SIGSTOP freezes the whole VM (the
// guest's clock included, as a hung host would), SIGCONT thaws it.
func (vm *VM) Signal(sig syscall.Signal) error {
	select {
	case <-vm.exited:
		return errors.New("qemu: signal: the VM is not running")
	default:
	}
	return vm.cmd.Process.Signal(sig)
}

// PowerButton presses the ACPI power button; the guest decides what to do.
func (vm *VM) PowerButton() error {
	_, err := vm.QMP("system_powerdown", nil)
	return err
}

// Reset presses the reset button: the guest restarts without shutting down.
func (vm *VM) Reset() error {
	_, err := vm.QMP("system_reset", nil)
	return err
}

// PowerCut ends the VM at once, as pulling the power cord would: the guest
// gets no chance to flush anything. It asks QEMU to quit and kills it if it
// does not. Wait reports no error for a VM whose power was cut.
func (vm *VM) PowerCut() error {
	vm.mu.Lock()
	vm.stopping = true
	vm.mu.Unlock()
	select {
	case <-vm.exited:
		return nil
	default:
	}
	if _, err := vm.qmp.execute("quit", nil, quitTimeout); err != nil && !errors.Is(err, errQMPClosed) {
		vm.logger.Warn("QMP quit failed; killing QEMU", "err", err)
	}
	select {
	case <-vm.exited:
		return nil
	case <-time.After(exitTimeout):
	}
	if err := vm.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("qemu: power cut: kill: %w", err)
	}
	select {
	case <-vm.exited:
		return nil
	case <-time.After(exitTimeout):
		return fmt.Errorf("qemu: power cut: QEMU (pid %d) still running after SIGKILL", vm.cmd.Process.Pid)
	}
}

// Wait waits for QEMU to exit by itself (the guest powered off, or rebooted
// with NoReboot) for at most timeout (forever if timeout <= 0). It returns an
// error if QEMU is still running or failed, with the end of its stderr.
func (vm *VM) Wait(timeout time.Duration) error {
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-vm.exited:
		return vm.exitError()
	case <-expired:
		return fmt.Errorf("qemu: VM still running after %v; last console output:\n%s", timeout, vm.con.tail(tailBytes))
	}
}

func (vm *VM) exitError() error {
	vm.mu.Lock()
	stopping := vm.stopping
	vm.mu.Unlock()
	if vm.exitErr == nil || stopping {
		return nil
	}
	return fmt.Errorf("qemu: %w; QEMU said: %s", vm.exitErr, strings.TrimSpace(vm.stderr.String()))
}

// Close stops QEMU if it still runs (a power cut) and removes the temporary
// directories Start created; it leaves WorkDir, when the caller gave one,
// with the overlay and the serial log. It is safe to call more than once.
func (vm *VM) Close() error {
	vm.mu.Lock()
	if vm.closed {
		vm.mu.Unlock()
		return nil
	}
	vm.closed = true
	vm.mu.Unlock()

	var errs []error
	if err := vm.PowerCut(); err != nil {
		errs = append(errs, err)
	}
	vm.qmp.close()
	if vm.stdin != nil {
		vm.stdin.Close()
	}
	select {
	case <-vm.exited:
		if vm.logErr != nil {
			errs = append(errs, fmt.Errorf("qemu: serial log: %w", vm.logErr))
		}
		if err := vm.con.logErr; err != nil {
			errs = append(errs, fmt.Errorf("qemu: serial log: %w", err))
		}
	default:
	}
	vm.mu.Lock()
	dirs := vm.removeDirs
	vm.removeDirs = nil
	vm.mu.Unlock()
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("qemu: remove %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// tailBuffer keeps the last max bytes written to it: QEMU's stderr, for
// error messages, without growing without bound.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
