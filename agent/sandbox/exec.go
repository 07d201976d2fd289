package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ExecName is argv[0] of the agent binary re-run inside the sandbox to
// confine the application's process before its own binary runs.
const ExecName = "keel-sandbox-exec"

// ExecPath is where a Root holds the agent binary, for ExecArgs.
const ExecPath = "/.keel/sandbox-exec"

// ExecArgs is the command line that runs prog with args confined, at most
// nproc processes for its user.
func ExecArgs(nproc int, prog string, args []string) []string {
	return append([]string{ExecName, strconv.Itoa(nproc), prog}, args...)
}

// MaybeExec is the first call of the agent's main (and of a test binary
// that runs the sandbox): as ExecName it confines this process and
// executes the application, and never returns; otherwise it returns at
// once.
func MaybeExec() {
	if filepath.Base(os.Args[0]) != ExecName {
		return
	}
	err := execConfined(os.Args[1:])
	fmt.Fprintf(os.Stderr, "%s: %v\n", ExecName, err)
	os.Exit(127)
}

func execConfined(args []string) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: %s NPROC PROGRAM [ARG...]", ExecName)
	}
	nproc, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || nproc == 0 {
		return fmt.Errorf("process limit %q is not a positive number", args[0])
	}
	// RLIMIT_NPROC counts the user's processes: with the application's own
	// user, a fork bomb stops at nproc while the agent (root) goes on.
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: nproc, Max: nproc}); err != nil {
		return fmt.Errorf("limit processes: %w", err)
	}
	if err := confine(); err != nil {
		return err
	}
	return unix.Exec(args[1], args[1:], os.Environ())
}
