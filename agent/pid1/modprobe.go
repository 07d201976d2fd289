package pid1

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ModprobePath is where the kernel runs its module-request helper
// (/proc/sys/kernel/modprobe's default).
const ModprobePath = "/sbin/modprobe"

// LinkModprobe makes the running program the kernel's module-request
// helper by linking ModprobePath to it; the program must answer to the
// name modprobe (coldplug.MaybeModprobe). It needs /proc.
//
// The initramfs ships no /sbin/modprobe because the kernel asks for
// modules while its own initcalls run, before init: Debian's 6.1 asks for
// six crypto algorithms (hmac, cbc: built in), and starting the 15 MB
// agent as the helper for each cost 0.35 s of every emulated boot, for
// nothing, since the agent has no such module either. With no helper
// those requests fail at once; from here on every request reaches it.
func LinkModprobe() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("link %s: %w", ModprobePath, err)
	}
	return linkModprobe(exe, ModprobePath)
}

func linkModprobe(exe, at string) error {
	if err := os.MkdirAll(filepath.Dir(at), 0o755); err != nil {
		return fmt.Errorf("link %s: %w", at, err)
	}
	// A symlink appears whole or not at all; one that is already there
	// (an initramfs of an older build) leads to the same program.
	if err := os.Symlink(exe, at); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("link %s: %w", at, err)
	}
	return nil
}
