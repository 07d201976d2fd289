// Package qemu boots keel disk images (or a kernel directly) under QEMU for
// `make run`, the VM tests and the benchmarks.
//
// A VM never modifies the image it boots: Start creates a qcow2 overlay in
// Config.WorkDir and boots that, so a test can inspect the overlay after the
// VM exits (DiskPath) while the image stays usable for the next test. The
// guest's network is QEMU's user network with restrict=on: the guest can reach
// nothing outside, only the forwarded ports reach it.
package qemu

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Config describes one VM. The zero value of every field but Image (or
// Kernel) is a usable default.
type Config struct {
	// Image is the disk image to boot, raw or qcow2. It is never modified:
	// the VM boots a qcow2 overlay created in WorkDir. Empty means no disk
	// (only useful with Kernel).
	Image string
	// DiskSizeMiB grows the overlay's virtual size beyond the image's (as a
	// bigger physical disk would be); 0 keeps the image's size.
	DiskSizeMiB int
	// WorkDir holds the overlay, the OVMF variables copy, the serial log and
	// the QMP socket (t.TempDir() in tests). Empty means a temporary
	// directory that Close removes.
	WorkDir string
	// DiskBus is how the disk is attached: "virtio" (default), "ahci" or "nvme".
	DiskBus string
	// ReadErrors are guest disk sectors (512 bytes) whose reads fail
	// with EIO, through QEMU's blkdebug: a disk going bad.
	ReadErrors []int64
	// NIC is the network card model: "virtio" (default) or "e1000".
	NIC string
	// MAC is the NIC's MAC address; empty keeps QEMU's default
	// 52:54:00:12:34:56. Two VMs on one network need different ones.
	MAC string
	// MemoryMiB is the guest's memory; default 1024.
	MemoryMiB int
	// CPUs is the number of virtual CPUs; default 1.
	CPUs int
	// CPUModel is the emulated CPU under TCG (QEMU's -cpu); default
	// DefaultCPUModel. Under KVM the host's CPU is passed through instead.
	CPUModel string
	// HTTPSPort is the host port on 127.0.0.1 forwarded to the guest's tcp/443;
	// 0 picks a free port (see VM.HTTPSPort).
	HTTPSPort int
	// Segment, when set, is a second NIC on a private layer-2 segment: an
	// open tap device (package nstest's Lab.Tap makes one on a bridge in
	// a namespace of the test's), passed to QEMU as a file descriptor so
	// the tap can live in a namespace while QEMU and its forwards stay in
	// the host's. It is the guest's second link (eth1), of model NIC,
	// with SegmentMAC. SetLink cuts and restores its cable.
	Segment    *os.File
	SegmentMAC string
	// HostFwd are extra user-network forwards from the host to the guest, in
	// QEMU's syntax, e.g. "tcp:127.0.0.1:8780-:80". The host address must be
	// a loopback address so that nothing outside this machine reaches the VM.
	HostFwd []string
	// GuestFwd are user-network forwards from the guest to the host, in
	// QEMU's syntax, e.g. "tcp:10.0.2.100:80-cmd:nc 127.0.0.1 8780" (a
	// command per connection) or "tcp:10.0.2.100:80-tcp:127.0.0.1:8780" (one
	// connection, opened when QEMU starts, so the host server must already
	// listen). With restrict=on these forwards are the only way out of the
	// guest; the gateway 10.0.2.2 does not reach the host.
	GuestFwd []string
	// HostLoopback lifts restrict=on so the guest reaches the host's
	// loopback services at 10.0.2.2 over UDP too (an NTP server, say).
	// The user network then also routes to other addresses: use it only
	// for guests that send to 10.0.2.2 alone, as keel's agent does when it
	// is configured with nothing else.
	HostLoopback bool
	// KVM uses -accel kvm (and -cpu host) instead of TCG. The environment
	// variable KEEL_KVM=1 turns it on too. Never the default: nested KVM
	// hangs on the build machines.
	KVM bool
	// RTCBase is QEMU's -rtc base=... ("utc", "localtime" or a date such as
	// "2020-01-01T00:00:00"); empty keeps QEMU's default (utc, now).
	RTCBase string
	// Serial is the SMBIOS system serial number (what the agent reads as the
	// appliance's serial); default "KEEL-VM-0001".
	Serial string
	// Watchdog adds an i6300esb watchdog whose expiry resets the VM.
	Watchdog bool
	// NoReboot makes QEMU exit instead of resetting when the guest reboots
	// (or panics with panic=N), so Wait observes the reboot.
	NoReboot bool
	// BIOS boots with QEMU's SeaBIOS instead of OVMF (UEFI). Only useful
	// with Kernel, as keel images boot through UEFI.
	BIOS bool
	// Kernel, Initrd and Append boot a kernel directly (-kernel, -initrd,
	// -append), bypassing the disk's boot loader.
	Kernel string
	Initrd string
	Append string
	// Console also receives the raw serial output (e.g. os.Stdout or a
	// writer onto t.Log). Its errors are ignored.
	Console io.Writer
	// Interactive puts the serial console, multiplexed with QEMU's monitor,
	// on this process's terminal (stdin and Console, default os.Stdout):
	// Ctrl-A X quits, Ctrl-A C switches to the monitor. Send is not
	// available then; Expect still is.
	Interactive bool
	// Logger receives the harness's own messages (the QEMU command line,
	// QMP events). Nil discards them.
	Logger *slog.Logger
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
}

// Default values, exported so that commands can show them in their usage.
const (
	DefaultDiskBus   = "virtio"
	DefaultNIC       = "virtio"
	DefaultMemoryMiB = 1024
	DefaultCPUs      = 1
	DefaultCPUModel  = "qemu64"
	DefaultSerial    = "KEEL-VM-0001"
)

// DiskBuses lists the values Config.DiskBus accepts.
func DiskBuses() []string { return []string{"ahci", "nvme", "virtio"} }

// NICs lists the values Config.NIC accepts.
func NICs() []string { return []string{"e1000", "virtio"} }

// nicDevice is the QEMU device for a Config.NIC value.
func nicDevice(nic string) string {
	switch nic {
	case "virtio":
		return "virtio-net-pci"
	case "e1000":
		return "e1000"
	}
	return ""
}

// KVMFromEnv reports whether the environment asks for KVM (KEEL_KVM=1).
func KVMFromEnv(getenv func(string) string) bool {
	if getenv == nil {
		getenv = os.Getenv
	}
	return getenv("KEEL_KVM") == "1"
}

// Validate checks c as Start would, without touching anything, so that a
// command can report a bad flag before it prints anything else.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns a copy of c with defaults filled in and checks it.
// It reads nothing from the environment or the file system so that argument
// building stays testable; Start does those.
func (c Config) withDefaults() (Config, error) {
	if c.DiskBus == "" {
		c.DiskBus = DefaultDiskBus
	}
	if c.NIC == "" {
		c.NIC = DefaultNIC
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.CPUModel == "" {
		c.CPUModel = DefaultCPUModel
	}
	if c.Serial == "" {
		c.Serial = DefaultSerial
	}
	if !slices.Contains(DiskBuses(), c.DiskBus) {
		return c, fmt.Errorf("qemu: unknown disk bus %q (valid: %s)", c.DiskBus, strings.Join(DiskBuses(), ", "))
	}
	if !slices.Contains(NICs(), c.NIC) {
		return c, fmt.Errorf("qemu: unknown NIC %q (valid: %s)", c.NIC, strings.Join(NICs(), ", "))
	}
	if c.MemoryMiB < 64 {
		return c, fmt.Errorf("qemu: memory %d MiB is too small (at least 64)", c.MemoryMiB)
	}
	if c.CPUs < 1 || c.CPUs > 64 {
		return c, fmt.Errorf("qemu: %d CPUs is out of range 1..64", c.CPUs)
	}
	if c.HTTPSPort < 0 || c.HTTPSPort > 65535 {
		return c, fmt.Errorf("qemu: HTTPS port %d is out of range", c.HTTPSPort)
	}
	if c.DiskSizeMiB < 0 {
		return c, fmt.Errorf("qemu: disk size %d MiB is negative", c.DiskSizeMiB)
	}
	if c.Image == "" && c.Kernel == "" {
		return c, fmt.Errorf("qemu: nothing to boot: set Image or Kernel")
	}
	if c.Image == "" && c.DiskSizeMiB > 0 {
		return c, fmt.Errorf("qemu: DiskSizeMiB needs an Image")
	}
	if (c.Initrd != "" || c.Append != "") && c.Kernel == "" {
		return c, fmt.Errorf("qemu: Initrd and Append need a Kernel")
	}
	if c.Segment != nil && c.SegmentMAC == "" {
		return c, fmt.Errorf("qemu: a Segment needs its SegmentMAC (two VMs on one segment need different ones)")
	}
	for _, m := range []string{c.MAC, c.SegmentMAC} {
		if m == "" {
			continue
		}
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 {
			return c, fmt.Errorf("qemu: bad MAC address %q", m)
		}
		if hw[0]&1 != 0 {
			return c, fmt.Errorf("qemu: MAC address %q is a multicast address", m)
		}
	}
	for _, rule := range c.HostFwd {
		if err := checkHostFwd(rule); err != nil {
			return c, err
		}
	}
	for _, rule := range c.GuestFwd {
		if !strings.Contains(rule, "-") {
			return c, fmt.Errorf("qemu: guestfwd rule %q: want [tcp]:GUESTADDR:GUESTPORT-DEV or -cmd:COMMAND", rule)
		}
	}
	return c, nil
}

// checkHostFwd accepts "[tcp|udp]:HOSTADDR:HOSTPORT-[GUESTADDR]:GUESTPORT"
// only with a loopback HOSTADDR: an empty one would make QEMU listen on every
// interface and expose the VM to the network.
func checkHostFwd(rule string) error {
	host, guest, ok := strings.Cut(rule, "-")
	if !ok {
		return fmt.Errorf("qemu: hostfwd rule %q: want [tcp|udp]:127.0.0.1:HOSTPORT-[GUESTADDR]:GUESTPORT", rule)
	}
	parts := strings.Split(host, ":")
	if len(parts) == 3 {
		if parts[0] != "tcp" && parts[0] != "udp" && parts[0] != "" {
			return fmt.Errorf("qemu: hostfwd rule %q: protocol %q is neither tcp nor udp", rule, parts[0])
		}
		parts = parts[1:]
	}
	if len(parts) != 2 {
		return fmt.Errorf("qemu: hostfwd rule %q: want [tcp|udp]:127.0.0.1:HOSTPORT-[GUESTADDR]:GUESTPORT", rule)
	}
	addr, err := netip.ParseAddr(parts[0])
	if err != nil || !addr.IsLoopback() {
		return fmt.Errorf("qemu: hostfwd rule %q: the host address must be a loopback address such as 127.0.0.1, not %q", rule, parts[0])
	}
	if p, err := strconv.Atoi(parts[1]); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("qemu: hostfwd rule %q: bad host port %q", rule, parts[1])
	}
	gparts := strings.Split(guest, ":")
	if len(gparts) != 2 {
		return fmt.Errorf("qemu: hostfwd rule %q: want GUESTADDR:GUESTPORT (GUESTADDR may be empty) after the dash", rule)
	}
	if p, err := strconv.Atoi(gparts[1]); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("qemu: hostfwd rule %q: bad guest port %q", rule, gparts[1])
	}
	return nil
}
