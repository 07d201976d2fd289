package sandbox

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// denied are the system calls the filter refuses with EPERM: the groups
// systemd's @system-service does not include (@mount, @module, @reboot,
// @swap, @clock, @raw-io, @debug, @obsolete, @cpu-emulation and the
// privileged rest: namespaces, keyrings, BPF, handles). A denylist rather
// than systemd's allowlist, so that an application built against a newer
// libc is not broken by a call this list has not heard of.
var denied = []uintptr{
	// @mount
	unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_PIVOT_ROOT, unix.SYS_CHROOT,
	unix.SYS_OPEN_TREE, unix.SYS_MOVE_MOUNT, unix.SYS_FSOPEN, unix.SYS_FSCONFIG,
	unix.SYS_FSMOUNT, unix.SYS_FSPICK, unix.SYS_MOUNT_SETATTR,
	// @module
	unix.SYS_INIT_MODULE, unix.SYS_FINIT_MODULE, unix.SYS_DELETE_MODULE,
	// @reboot
	unix.SYS_REBOOT, unix.SYS_KEXEC_LOAD, unix.SYS_KEXEC_FILE_LOAD,
	// @swap
	unix.SYS_SWAPON, unix.SYS_SWAPOFF,
	// @clock
	unix.SYS_SETTIMEOFDAY, unix.SYS_CLOCK_SETTIME, unix.SYS_CLOCK_ADJTIME, unix.SYS_ADJTIMEX,
	// @raw-io
	unix.SYS_IOPL, unix.SYS_IOPERM,
	// @debug
	unix.SYS_PTRACE, unix.SYS_PROCESS_VM_READV, unix.SYS_PROCESS_VM_WRITEV,
	unix.SYS_PERF_EVENT_OPEN, unix.SYS_LOOKUP_DCOOKIE, unix.SYS_KCMP,
	// @obsolete and @cpu-emulation
	unix.SYS_USELIB, unix.SYS__SYSCTL, unix.SYS_CREATE_MODULE, unix.SYS_GET_KERNEL_SYMS,
	unix.SYS_QUERY_MODULE, unix.SYS_NFSSERVCTL, unix.SYS_MODIFY_LDT, unix.SYS_VHANGUP,
	// privileged: host identity, accounting, quotas, kernel log,
	// namespaces, keyrings, BPF, file handles, userfaultfd
	unix.SYS_SETHOSTNAME, unix.SYS_SETDOMAINNAME, unix.SYS_ACCT, unix.SYS_QUOTACTL,
	unix.SYS_SYSLOG, unix.SYS_UNSHARE, unix.SYS_SETNS, unix.SYS_KEYCTL, unix.SYS_ADD_KEY,
	unix.SYS_REQUEST_KEY, unix.SYS_BPF, unix.SYS_OPEN_BY_HANDLE_AT, unix.SYS_NAME_TO_HANDLE_AT,
	unix.SYS_USERFAULTFD,
}

// x32 system calls have this bit set; the filter refuses them all, since
// the numbers above are those of the x86-64 ABI.
const x32Bit = 0x40000000

// filter is the seccomp program: x86-64 only (anything else is killed),
// x32 and the denied calls answer EPERM, everything else runs.
func filter() ([]unix.SockFilter, error) {
	const (
		archOff = 4 // offsetof(struct seccomp_data, arch)
		nrOff   = 0
	)
	errno := bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)}
	allow := bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW}
	kill := bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS}
	n := len(denied)
	// Layout: 0 load arch, 1 arch check, 2 load nr, 3 x32 check, 4..4+n-1
	// the denied calls, then allow, errno, kill.
	allowAt := 4 + n
	errnoAt, killAt := allowAt+1, allowAt+2
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: archOff, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipFalse: uint8(killAt - 2)},
		bpf.LoadAbsolute{Off: nrOff, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32Bit, SkipTrue: uint8(errnoAt - 4)},
	}
	for i, nr := range denied {
		at := 4 + i
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(nr), SkipTrue: uint8(errnoAt - at - 1)})
	}
	prog = append(prog, allow, errno, kill)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble the seccomp filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

// confine sets no_new_privs and installs the filter on every thread of
// the process (the calling one stays locked to run the exec).
func confine() error {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	f, err := filter()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("install the seccomp filter: %w", e)
	}
	return nil
}
