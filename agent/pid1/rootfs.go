package pid1

import (
	"github.com/u-root/u-root/pkg/libinit"
	"github.com/u-root/u-root/pkg/ulog"
	"golang.org/x/sys/unix"
)

// rootfs is what the box needs mounted before anything else: devices, the
// kernel's views, and RAM-backed /tmp and /dev/shm. The initramfs's root
// is itself writable, so /etc needs no copy.
//
// It replaces u-root's libinit.CreateRootfs, which also mounted efivarfs
// (whose module the kernel then loaded through /sbin/modprobe while PID 1
// waited), debugfs, securityfs and eleven cgroup v1 hierarchies that the
// sandbox unmounted again for cgroup v2, and copied /etc into /tmp: about
// a quarter of a second of an emulated boot before the agent's first line.
// Nothing on the box reads the kernel's debug or security files, and the
// EFI variables only once, for the boot controller (the agent mounts
// efivarfs read-only for that moment); the boot state is a file on the
// ESP.
var rootfs = []libinit.Creator{
	libinit.Dir{Name: "/proc", Mode: 0o555},
	libinit.Mount{Source: "proc", Target: "/proc", FSType: "proc"},
	libinit.Dir{Name: "/sys", Mode: 0o555},
	libinit.Mount{Source: "sysfs", Target: "/sys", FSType: "sysfs"},
	libinit.Dir{Name: "/tmp", Mode: 0o1777},
	libinit.Mount{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV},
	libinit.Dir{Name: "/dev/pts", Mode: 0o755},
	libinit.Mount{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Opts: "newinstance,ptmxmode=666,gid=5,mode=620"},
	// With newinstance, /dev/ptmx must lead to the instance's.
	libinit.Symlink{NewPath: "/dev/ptmx", Target: "/dev/pts/ptmx"},
	libinit.Dir{Name: "/dev/shm", Mode: 0o1777},
	libinit.Mount{Source: "tmpfs", Target: "/dev/shm", FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV},
	libinit.Dir{Name: "/var/log", Mode: 0o755},
}

// MountRootfs mounts devtmpfs on /dev (the kernel does not for an
// initramfs), reopens the kernel log there for u-root's libraries, creates
// the rest of rootfs and makes PID 1 the kernel's module-request helper
// (LinkModprobe). Failures are written to the kernel log and do not stop
// the boot: PID 1 goes on with what it has.
func MountRootfs() {
	libinit.Create([]libinit.Creator{
		libinit.Dir{Name: "/dev", Mode: 0o755},
		libinit.Mount{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs"},
	}, false)
	ulog.KernelLog.Reinit()
	libinit.Create(rootfs, false)
	if err := LinkModprobe(); err != nil {
		ulog.KernelLog.Printf("%v", err)
	}
}
