// Command vm boots a keel disk image under QEMU with the serial console on
// this terminal: what `make run` runs. The image is never modified; the VM
// writes to an overlay in a temporary directory that is deleted at exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"keel.dev/keel/qemu"
)

const usage = `usage: vm [flags]

Boots a keel disk image under QEMU (UEFI, TCG unless -kvm) with the serial
console on this terminal. The image is never modified: the VM writes to a
qcow2 overlay in a temporary directory that is deleted when QEMU exits.

The API is forwarded to https://127.0.0.1:PORT (guest tcp/443). The guest's
network is QEMU's user network with restrict=on: it reaches nothing outside.

Keys on the console (QEMU's multiplexer):
  Ctrl-A X   quit QEMU (a power cut)
  Ctrl-A C   switch between the serial console and the QEMU monitor
             (in the monitor: system_powerdown presses the power button,
             system_reset resets)
  Ctrl-A H   list the keys
  Ctrl-C goes to the guest.

KEEL_KVM=1 in the environment has the same effect as -kvm. Nested KVM can
hang, so KVM is never the default.

Flags:
`

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("vm", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	image := fs.String("image", "build/keel.img", "disk image to boot (raw or qcow2)")
	port := fs.Int("port", 8443, "host port on 127.0.0.1 forwarded to the guest's tcp/443 (0 picks a free one)")
	appPort := fs.Int("app-port", 8080, "host port on 127.0.0.1 forwarded to the guest's tcp/8080, the demo app's (0: none)")
	disk := fs.String("disk", qemu.DefaultDiskBus, "disk bus: "+strings.Join(qemu.DiskBuses(), "|"))
	nic := fs.String("nic", qemu.DefaultNIC, "network card: "+strings.Join(qemu.NICs(), "|"))
	mem := fs.Int("mem", qemu.DefaultMemoryMiB, "memory in MiB")
	cpus := fs.Int("cpus", qemu.DefaultCPUs, "virtual CPUs")
	kvm := fs.Bool("kvm", false, "use KVM instead of TCG (also KEEL_KVM=1)")
	watchdog := fs.Bool("watchdog", false, "add an i6300esb watchdog that resets the VM")
	serial := fs.String("serial", qemu.DefaultSerial, "SMBIOS system serial number")
	rtc := fs.String("rtc", "", "RTC base: utc, localtime or a date such as 2020-01-01T00:00:00")
	kernel := fs.String("kernel", "", "boot this kernel directly instead of through the disk's boot loader")
	initrd := fs.String("initrd", "", "initramfs for -kernel")
	appendArgs := fs.String("append", "", "kernel command line for -kernel")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "vm: unexpected arguments %q\n", fs.Args())
		fs.Usage()
		return 2
	}
	if *kernel != "" && !isFlagSet(fs, "image") {
		*image = "" // a kernel alone boots without the default image
	}

	work, err := os.MkdirTemp("", "keel-vm-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "vm: %v\n", err)
		return 1
	}
	defer os.RemoveAll(work)

	// SIGTERM and SIGHUP stop QEMU cleanly so that it restores the
	// terminal; in raw mode Ctrl-C reaches the guest, not this process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	cfg := qemu.Config{
		Image:       *image,
		WorkDir:     work,
		DiskBus:     *disk,
		NIC:         *nic,
		MemoryMiB:   *mem,
		CPUs:        *cpus,
		HTTPSPort:   *port,
		KVM:         *kvm,
		Watchdog:    *watchdog,
		Serial:      *serial,
		RTCBase:     *rtc,
		Kernel:      *kernel,
		Initrd:      *initrd,
		Append:      *appendArgs,
		Interactive: true,
	}
	if *appPort != 0 {
		cfg.HostFwd = append(cfg.HostFwd, fmt.Sprintf("tcp:127.0.0.1:%d-:8080", *appPort))
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "vm: %v\n", err)
		return 2
	}
	if cfg.Image != "" {
		if _, err := os.Stat(cfg.Image); err != nil {
			fmt.Fprintf(os.Stderr, "vm: %v (build the image first, or pass -image)\n", err)
			return 1
		}
	}
	banner := func(port int) {
		fmt.Printf("vm: web interface at https://127.0.0.1:%[1]d/appliance, API at https://127.0.0.1:%[1]d/api/v1 (Ctrl-A X quits, Ctrl-A C toggles the QEMU monitor)\n", port)
		if *appPort != 0 {
			fmt.Printf("vm: the application (the demo app in make image) at http://127.0.0.1:%d\n", *appPort)
		}
	}
	if *port != 0 {
		banner(*port) // before QEMU starts, so it is not lost in the boot output
	}
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vm: %v\n", err)
		return 1
	}
	defer vm.Close()
	if *port == 0 {
		banner(vm.HTTPSPort())
	}

	select {
	case <-vm.Exited():
	case <-ctx.Done():
		vm.PowerCut()
	}
	if err := vm.Wait(0); err != nil {
		var exit *exec.ExitError
		fmt.Fprintf(os.Stderr, "vm: %v\n", err)
		if errors.As(err, &exit) && exit.ExitCode() > 0 {
			return exit.ExitCode()
		}
		return 1
	}
	return 0
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
