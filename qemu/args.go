package qemu

import (
	"strconv"
	"strings"
)

// Paths of the firmware Start uses; Debian's package ovmf installs them.
const (
	OVMFCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	OVMFVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// SegmentNIC is the QEMU device id of the segment's NIC.
const SegmentNIC = "seg0"

// runFiles are the files Start prepares for one run of QEMU.
type runFiles struct {
	Overlay  string // the qcow2 overlay; empty without an image
	OVMFCode string // read-only firmware; empty with BIOS
	OVMFVars string // this VM's copy of the UEFI variables; empty with BIOS
	QMP      string // QMP unix socket
	// Blkdebug is the blkdebug rules file that fails reads of
	// Config.ReadErrors; empty without them.
	Blkdebug string
}

// buildArgs returns QEMU's arguments (without the program name) for c, which
// must have been through withDefaults, with kvm already resolved from the
// environment. It touches nothing, so tests can check it directly.
func buildArgs(c Config, f runFiles, httpsPort int) []string {
	a := []string{
		"-name", "keel",
		// No host configuration file and no default devices: every device
		// the guest sees is listed below, so runs are reproducible.
		"-no-user-config", "-nodefaults",
		// q35 is the closest to appliance hardware (PCIe, AHCI, ICH9).
		"-machine", "q35",
		"-m", strconv.Itoa(c.MemoryMiB),
		"-smp", strconv.Itoa(c.CPUs),
		"-display", "none",
	}
	if c.KVM {
		a = append(a, "-accel", "kvm", "-cpu", "host")
	} else {
		a = append(a, "-accel", "tcg", "-cpu", c.CPUModel)
	}

	if c.Interactive {
		// The serial port and QEMU's monitor share the terminal (Ctrl-A C
		// switches, Ctrl-A X quits); signal=off passes Ctrl-C to the guest
		// instead of killing QEMU.
		a = append(a,
			"-chardev", "stdio,id=con0,mux=on,signal=off",
			"-serial", "chardev:con0",
			"-mon", "chardev=con0,mode=readline")
	} else {
		// ttyS0 on QEMU's stdin and stdout, which Start pipes: the harness
		// reads the console and can type into it.
		a = append(a, "-serial", "stdio")
	}
	a = append(a,
		"-chardev", "socket,id=qmp0,path="+escape(f.QMP)+",server=on,wait=off",
		"-mon", "chardev=qmp0,mode=control")

	if !c.BIOS {
		a = append(a,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+escape(f.OVMFCode),
			"-drive", "if=pflash,format=raw,unit=1,file="+escape(f.OVMFVars))
	}

	if f.Overlay != "" {
		drive := "file=" + escape(f.Overlay) + ",format=qcow2"
		if f.Blkdebug != "" {
			// blkdebug above the format: its rules name guest sectors.
			drive = "driver=blkdebug,config=" + escape(f.Blkdebug) + ",image.driver=qcow2,image.file.driver=file,image.file.filename=" + escape(f.Overlay)
		}
		switch c.DiskBus {
		case "virtio":
			// id=d0 on every bus: ThrottleWrites names the drive.
			a = append(a, "-drive", drive+",if=virtio,id=d0")
		case "ahci":
			a = append(a,
				"-device", "ahci,id=ahci",
				"-drive", drive+",if=none,id=d0",
				"-device", "ide-hd,drive=d0,bus=ahci.0")
		case "nvme":
			a = append(a,
				"-drive", drive+",if=none,id=d0",
				"-device", "nvme,serial=keel-nvme0,drive=d0")
		}
	}

	// restrict=on isolates the guest: no packets leave through the host,
	// and the gateway does not reach host services. DHCP from slirp and the
	// explicit forwards below still work.
	restrict := "on"
	if c.HostLoopback {
		restrict = "off"
	}
	netdev := "user,id=n0,restrict=" + restrict + ",hostfwd=tcp:127.0.0.1:" + strconv.Itoa(httpsPort) + "-:443"
	for _, r := range c.HostFwd {
		netdev += ",hostfwd=" + escape(r)
	}
	for _, r := range c.GuestFwd {
		netdev += ",guestfwd=" + escape(r)
	}
	nic := nicDevice(c.NIC) + ",netdev=n0"
	if c.MAC != "" {
		nic += ",mac=" + c.MAC
	}
	a = append(a, "-netdev", netdev, "-device", nic)
	if c.Segment != nil {
		// The tap's descriptor is the child's fd 3 (the first of
		// exec.Cmd's ExtraFiles).
		a = append(a, "-netdev", "tap,id=n1,fd=3", "-device", nicDevice(c.NIC)+",netdev=n1,id="+SegmentNIC+",mac="+c.SegmentMAC)
	}

	// An entropy source, as hypervisors give their guests: without it the
	// guest's getrandom blocks for seconds at boot until the kernel's
	// jitter entropy has initialised the CRNG.
	a = append(a, "-device", "virtio-rng-pci")
	a = append(a, "-smbios", "type=1,serial="+escape(c.Serial))
	if c.RTCBase != "" {
		a = append(a, "-rtc", "base="+escape(c.RTCBase))
	}
	if c.Watchdog {
		a = append(a, "-device", "i6300esb", "-action", "watchdog=reset")
	}
	if c.NoReboot {
		a = append(a, "-no-reboot")
	}
	if c.Kernel != "" {
		a = append(a, "-kernel", c.Kernel)
		if c.Initrd != "" {
			a = append(a, "-initrd", c.Initrd)
		}
		if c.Append != "" {
			a = append(a, "-append", c.Append)
		}
	}
	return append(a, c.ExtraArgs...)
}

// escape doubles commas, QEMU's escape inside an option list, so a path or a
// value with a comma cannot start a new option.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
