// Command agent is keel's PID 1: it mounts what the box needs, loads the
// drivers its hardware asks for, brings up the data partition, network and
// API, commits a trial boot once healthy, supervises its services and shuts
// the box down cleanly. It never exits.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/libinit"
	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/coldplug"
	"keel.dev/keel/agent/console"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/agent/sandbox"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/hwtest/cli"
)

func main() {
	// Re-run inside an application's sandbox, this binary confines the
	// process and runs the application instead.
	sandbox.MaybeExec()
	// /bin/hwtest is this binary under another name: one copy of the
	// self-test's code in the initramfs instead of two (2.6 MB less for
	// the kernel to unpack at every boot).
	if filepath.Base(os.Args[0]) == "hwtest" {
		os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	// So is the kernel's module-request helper, /sbin/modprobe
	// (pid1.LinkModprobe).
	coldplug.MaybeModprobe()
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "agent: must run as PID 1 (the init of a keel initramfs)")
		os.Exit(2)
	}
	// A soft limit keeps the agent's footprint small on small appliances:
	// the runtime collects and returns memory to the kernel sooner (password
	// hashing allocates 16 MiB at a time).
	debug.SetMemoryLimit(24 << 20)
	libinit.SetEnv()
	pid1.MountRootfs()
	libinit.NetInit() // loopback: the health check and local tools use it
	// Ctrl-Alt-Del sends SIGINT to PID 1 instead of an instant reboot.
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	pid1.ReapOrphans()

	con := pid1.OpenConsoles("/dev/ttyS0", "/dev/tty0")
	// The console menu pages through what the consoles showed.
	ring := console.NewRing(256 << 10)
	out := io.MultiWriter(con, ring)
	// keel.log=debug on the kernel command line (GRUB's `e`, or
	// `image build -kernel-args`) shows every module load and scan.
	cmdline := readTrim("/proc/cmdline")
	has := func(word string) bool { return strings.Contains(" "+cmdline+" ", " "+word+" ") }
	level := slog.LevelInfo
	if has("keel.log=debug") {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	stopProfile := startBootProfile(has("keel.cpuprofile=1"))
	a := newAgent(log, out)
	a.console, a.logRing = con, ring
	// What GRUB said of this boot (slot, mode, disk) is read here once;
	// the boot phases take it from a.boot0.
	a.boot0 = slots.ParseCmdline(cmdline)
	defer func() {
		// Nothing may take PID 1 down: a panic here still ends in a clean
		// shutdown rather than a kernel panic.
		if r := recover(); r != nil {
			log.Error("agent crashed; rebooting", "panic", r, "stack", string(debug.Stack()))
			a.halt(pid1.Reboot)
		}
	}()
	a.boot()
	if stopProfile != nil {
		stopProfile(con)
	}
	a.startConsole()
	if has("keel.hwtest=1") {
		go a.bootSelfTest()
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2)
	for {
		select {
		case act := <-a.shutdown:
			a.halt(act)
		case s := <-sigs:
			// SIGINT is Ctrl-Alt-Del; SIGTERM and SIGUSR2 power off, as
			// busybox init does.
			if s == unix.SIGINT {
				a.halt(pid1.Reboot)
			}
			a.halt(pid1.PowerOff)
		}
	}
}

// halt stops services, then syncs, unmounts and powers off or reboots.
func (a *agent) halt(act pid1.Action) {
	a.log.Info("shutting down", "action", act.String())
	fmt.Fprintf(a.con, "keel: shutting down (%s)\n", act)
	a.stopServices()
	if !a.sup.Wait(10 * time.Second) {
		a.log.Warn("some services did not stop within 10 s")
	}
	pid1.Halt(a.log, a.console, act, a.mountList())
}
