// Command modprobe is the initramfs's /sbin/modprobe: the program the kernel
// runs (as "modprobe -q -- NAME") when it needs a module it does not have,
// e.g. the "nls_ascii" charset a vfat mount asks for, "crypto-crc32c" for
// ext4 metadata checksums, or "net-pf-*" protocol families. Without it those
// requests fail even though the module is in the initramfs. It resolves NAME
// through modules.dep and modules.alias with the agent's coldplug loader.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"keel.dev/keel/agent/coldplug"
)

func main() {
	quiet := flag.Bool("q", false, "print no error for a module that is not found")
	flag.Bool("b", false, "ignored (blacklists are not used)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: modprobe [-q] [--] name-or-alias...")
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	// The kernel waits for this process while it holds up a mount or a
	// socket call; never hang it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := coldplug.New(coldplug.Options{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
		os.Exit(1)
	}
	// The kernel passes one name; modprobe(8) treats the rest as module
	// parameters, which keel never uses.
	name := flag.Arg(0)
	if err := l.Load(ctx, name); err != nil {
		if !(*quiet && errors.Is(err, coldplug.ErrUnknown)) {
			fmt.Fprintf(os.Stderr, "modprobe: %v\n", err)
		}
		os.Exit(1)
	}
}
