package coldplug

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// MaybeModprobe runs Modprobe and exits when this program was started as
// modprobe: /sbin/modprobe is a link to the initramfs's init, the agent or
// a benchmark's init in its place (initramfs -agent), made by that init
// (pid1.LinkModprobe), and any of them must answer the kernel's module
// requests rather than start over as an init.
func MaybeModprobe() {
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(Modprobe(os.Args[1:], Options{}, os.Stderr))
	}
}

// Modprobe is the box's /sbin/modprobe: the program the kernel runs (as
// "modprobe -q -- NAME") when it needs a module it does not have, e.g. a
// charset a vfat mount asks for, "crypto-crc32c" for ext4's metadata
// checksums, or a "net-pf-*" protocol family. Without it those requests
// fail although the module is on the box. It resolves NAME through
// modules.dep and modules.alias as the boot's coldplug does, and returns
// the exit status. /sbin/modprobe is a link to the agent (MaybeModprobe):
// one Go program less for the kernel to unpack at every boot.
func Modprobe(args []string, opts Options, stderr io.Writer) int {
	fl := flag.NewFlagSet("modprobe", flag.ContinueOnError)
	fl.SetOutput(stderr)
	quiet := fl.Bool("q", false, "print no error for a module that is not found")
	fl.Bool("b", false, "ignored (blacklists are not used)")
	fl.Usage = func() { fmt.Fprintln(stderr, "usage: modprobe [-q] [--] name-or-alias...") }
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() == 0 {
		fl.Usage()
		return 2
	}
	// The kernel waits for this process while it holds up a mount or a
	// socket call; never hang it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "modprobe: %v\n", err)
		return 1
	}
	// The kernel passes one name; modprobe(8) takes the rest as the
	// module's parameters, which keel never uses.
	if err := l.Load(ctx, fl.Arg(0)); err != nil {
		if !*quiet || !errors.Is(err, ErrUnknown) {
			fmt.Fprintf(stderr, "modprobe: %v\n", err)
		}
		return 1
	}
	return 0
}
