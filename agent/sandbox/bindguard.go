package sandbox

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GuardBinds attaches to the cgroup a program that lets its processes
// bind only the given TCP and UDP ports (and port 0, which asks the kernel
// for any free one), over IPv4 and IPv6: the application may bind only
// the ports its app.json declares. Any other bind fails with EPERM. The
// programs go with the cgroup when it is removed.
func (c *Cgroup) GuardBinds(ports []int) error {
	prog, err := bindProgram(ports)
	if err != nil {
		return err
	}
	cg, err := unix.Open(c.Dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind guard: %w", err)
	}
	defer unix.Close(cg)
	for _, at := range []uint32{unix.BPF_CGROUP_INET4_BIND, unix.BPF_CGROUP_INET6_BIND} {
		fd, err := loadSockAddr(prog, at)
		if err != nil {
			return err
		}
		err = attach(cg, fd, at)
		unix.Close(fd) // the attachment keeps the program
		if err != nil {
			return err
		}
	}
	return nil
}

// bindProgram is eBPF for a cgroup/bind hook: return 1 (allow) when
// ctx->user_port, in network byte order, is 0 or one of ports, else 0.
func bindProgram(ports []int) ([]byte, error) {
	const (
		ldxw   = 0x61 // BPF_LDX | BPF_MEM | BPF_W
		jeqImm = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
		movImm = 0xb7 // BPF_ALU64 | BPF_MOV | BPF_K
		exit   = 0x95 // BPF_JMP | BPF_EXIT
		// offsetof(struct bpf_sock_addr, user_port)
		userPort = 24
	)
	allowed := append([]int{0}, ports...)
	if len(allowed) > 1000 {
		return nil, fmt.Errorf("bind guard: %d ports is too many", len(ports))
	}
	var insns [][8]byte
	insn := func(code, dst, src uint8, off int16, imm int32) {
		var b [8]byte
		b[0], b[1] = code, dst|src<<4
		binary.LittleEndian.PutUint16(b[2:], uint16(off))
		binary.LittleEndian.PutUint32(b[4:], uint32(imm))
		insns = append(insns, b)
	}
	insn(ldxw, 2, 1, userPort, 0) // r2 = ctx->user_port
	for i, p := range allowed {
		if p < 0 || p > 65535 {
			return nil, fmt.Errorf("bind guard: %d is not a port", p)
		}
		be := int32(uint16(p)>>8 | uint16(p)<<8)
		// Jump over the remaining checks and the deny pair to the allow.
		insn(jeqImm, 2, 0, int16(len(allowed)-i-1+2), be)
	}
	insn(movImm, 0, 0, 0, 0) // deny
	insn(exit, 0, 0, 0, 0)
	insn(movImm, 0, 0, 0, 1) // allow
	insn(exit, 0, 0, 0, 0)
	out := make([]byte, 0, 8*len(insns))
	for _, b := range insns {
		out = append(out, b[:]...)
	}
	return out, nil
}

func loadSockAddr(prog []byte, attachType uint32) (int, error) {
	license := []byte("GPL\x00")
	logBuf := make([]byte, 4096)
	// union bpf_attr for BPF_PROG_LOAD, up to expected_attach_type.
	var attr [72]byte
	binary.LittleEndian.PutUint32(attr[0:], unix.BPF_PROG_TYPE_CGROUP_SOCK_ADDR)
	binary.LittleEndian.PutUint32(attr[4:], uint32(len(prog)/8))
	binary.LittleEndian.PutUint64(attr[8:], uint64(uintptr(unsafe.Pointer(&prog[0]))))
	binary.LittleEndian.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&license[0]))))
	binary.LittleEndian.PutUint32(attr[24:], 1) // log level
	binary.LittleEndian.PutUint32(attr[28:], uint32(len(logBuf)))
	binary.LittleEndian.PutUint64(attr[32:], uint64(uintptr(unsafe.Pointer(&logBuf[0]))))
	copy(attr[48:64], "keel_bind_guard")
	binary.LittleEndian.PutUint32(attr[68:], attachType)
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr[0])), unsafe.Sizeof(attr))
	// The attribute holds the buffers' addresses as plain numbers; they
	// must stay in place until the call has returned (no call between
	// taking the addresses and the system call can move a stack).
	runtime.KeepAlive(prog)
	runtime.KeepAlive(license)
	runtime.KeepAlive(logBuf)
	if errno != 0 {
		return -1, fmt.Errorf("bind guard: load the program: %w (%s)", errno, cstring(logBuf))
	}
	return int(fd), nil
}

func attach(cgroup, prog int, attachType uint32) error {
	var attr [16]byte
	binary.LittleEndian.PutUint32(attr[0:], uint32(cgroup))
	binary.LittleEndian.PutUint32(attr[4:], uint32(prog))
	binary.LittleEndian.PutUint32(attr[8:], attachType)
	binary.LittleEndian.PutUint32(attr[12:], unix.BPF_F_ALLOW_MULTI)
	if _, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_ATTACH, uintptr(unsafe.Pointer(&attr[0])), unsafe.Sizeof(attr)); errno != 0 {
		return fmt.Errorf("bind guard: attach to the cgroup: %w", errno)
	}
	return nil
}

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
