// Command initramfs builds keel's initramfs: the agent as /init (PID 1), a
// busybox of u-root recovery tools, and the kernel modules the supported
// hardware needs, as an LZ4-compressed cpio archive.
//
//	go run ./initramfs -kernel build/kernel -o build/initramfs.cpio.lz4
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	var cfg config
	flag.StringVar(&cfg.kernelDir, "kernel", "build/kernel", "unpacked kernel `dir` as image/deps.sh leaves it (vmlinuz, version, lib/modules)")
	flag.StringVar(&cfg.agent, "agent", "keel.dev/keel/agent", "Go `package` of the agent (PID 1), or the path of an already built agent binary; /bin/hwtest is a link to it and the agent links /sbin/modprobe to itself at start (pid1.LinkModprobe), so another init must answer to those names (coldplug.Modprobe, hwtest/cli) and make that link if it needs kernel module requests")
	flag.StringVar(&cfg.output, "o", "build/initramfs.cpio.lz4", "output `file`")
	flag.Var((*multiFlag)(&cfg.files), "files", "extra file `src:dst` to add (dst relative to /); repeatable")
	flag.Var((*multiFlag)(&cfg.binaries), "binary", "extra Go command `package` to add as /bin/<name>; repeatable")
	flag.StringVar(&cfg.cacheDir, "cache", "build/cache", "`dir` to keep the u-root busybox between builds; empty to always rebuild")
	verbose := flag.Bool("v", false, "log the build steps")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "initramfs: unexpected arguments %q\n", flag.Args())
		flag.Usage()
		os.Exit(2)
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	rep, err := build(context.Background(), cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "initramfs: %v\n", err)
		os.Exit(1)
	}
	rep.print(os.Stdout)
}
