// Command ddinit is the /init (PID 1) of the install benchmark's baseline:
// booted directly by the kernel from a variant of keel's initramfs (go run
// ./initramfs -agent <this binary>), it loads the disk drivers as the agent
// does (coldplug), finds a base slot by its GPT name, writes N MiB of zeros
// to it with u-root's dd (bs=1M), syncs the partition, prints
//
//	DDBENCH part=base-b device=/dev/vda4 bytes=N dd=SECONDS total=SECONDS
//
// (total includes the sync) or DDBENCH error="...", and powers off. It
// never returns from main. Kernel parameters: keel.ddpart=NAME (default
// base-b) and keel.ddcount=N (MiB, default 200).
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/u-root/u-root/pkg/libinit"
	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/agent/coldplug"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/image/layout"
)

// dd is u-root's dd in keel's initramfs.
const dd = "/bbin/dd"

func main() {
	// In a keel initramfs the init's binary is also /sbin/modprobe, a
	// link the init makes, as the agent does.
	coldplug.MaybeModprobe()
	libinit.SetEnv()
	libinit.CreateRootfs()
	if err := pid1.LinkModprobe(); err != nil {
		fmt.Println(err)
	}
	if err := run(); err != nil {
		fmt.Printf("DDBENCH error=%q\n", err.Error())
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() error {
	part, count := layout.BaseB, int64(200)
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "keel.ddpart="); ok {
			part = v
		}
		if v, ok := strings.CutPrefix(f, "keel.ddcount="); ok {
			if count, err = strconv.ParseInt(v, 10, 64); err != nil || count < 1 {
				return fmt.Errorf("bad keel.ddcount=%s", v)
			}
		}
	}

	l, err := coldplug.New(coldplug.Options{})
	if err != nil {
		return err
	}
	if _, err := l.Coldplug(context.Background()); err != nil {
		return err
	}
	p, err := blockdev.Default().Wait(part, 10*time.Second)
	if err != nil {
		return err
	}
	bytes := count << 20
	if p.Size > 0 && bytes > p.Size {
		return fmt.Errorf("%s (%s) holds %d bytes, fewer than %d", part, p.Device, p.Size, bytes)
	}

	start := time.Now()
	cmd := exec.Command(dd, "if=/dev/zero", "of="+p.Device, "bs=1048576", "count="+strconv.FormatInt(count, 10), "conv=notrunc")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	ddTook := time.Since(start)
	// fsync of the block device writes its dirty pages and flushes the
	// disk's cache, as the agent's install does before its read-back.
	f, err := os.OpenFile(p.Device, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", p.Device, err)
	}
	f.Close()
	total := time.Since(start)
	fmt.Printf("DDBENCH part=%s device=%s bytes=%d dd=%.3f total=%.3f\n", part, p.Device, bytes, ddTook.Seconds(), total.Seconds())
	return nil
}
