// Command image is the vendor's side of keel: it builds disk images,
// signed packages and releases, and serves releases (the update server).
//
//	go run ./image build [flags]     write a disk image (see -h)
//	go run ./image keygen [-o P]     make a vendor signing key pair
//	go run ./image package [flags]   sign a slot image into a package
//	go run ./image inspect FILE...   print and verify packages
//	go run ./image release [flags]   build the demo release folder and its catalog
//	go run ./image serve [flags]     serve a release folder (the update server)
//	go run ./image redeem [flags]    turn a download key into an offline bundle
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx := context.Background()
	var err error
	switch os.Args[1] {
	case "build":
		err = build(ctx, os.Args[2:])
	case "keygen":
		err = keygen(os.Args[2:], os.Stdout)
	case "package":
		err = makePackage(os.Args[2:], os.Stdout)
	case "inspect":
		err = inspect(os.Args[2:], os.Stdout)
	case "release":
		err = release(os.Args[2:], os.Stdout)
	case "serve":
		err = serve(os.Args[2:])
	case "redeem":
		err = redeem(os.Args[2:], os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: image build|keygen|package|inspect|release|serve|redeem [flags]   (image COMMAND -h for the flags)")
	os.Exit(2)
}

func build(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	kernelDir := fs.String("kernel-dir", "build/kernel", "unpacked kernel from `make deps` (vmlinuz, version)")
	initramfs := fs.String("initramfs", "build/initramfs.cpio.lz4", "initramfs from `make initramfs`")
	out := fs.String("o", "build/keel.img", "raw image to write")
	qcow := fs.String("qcow2", "", "also write this qcow2 image")
	version := fs.String("version", "1.0.0", "base version in slot a")
	versionB := fs.String("version-b", "", "fill slot b too, with this version (boot tests use it)")
	sizeMiB := fs.Int64("size", diskimage.DefaultSize/layout.MiB, "disk size in MiB")
	timeout := fs.Int("grub-timeout", 1, "seconds GRUB waits, menu hidden (Esc shows it), before it boots the default slot")
	kernelArgs := fs.String("kernel-args", "", "added to every GRUB entry's kernel command line (e.g. \"initcall_debug ignore_loglevel\")")
	menuTimeout := fs.Int("grub-menu-timeout", 5, "seconds the GRUB menu waits, shown, after a fallback to the other slot and in recovery")
	app := fs.String("app", "", "application in slot app-a: a squashfs `file`, or demo:VERSION for the demo app; empty leaves the app slots empty")
	fs.Parse(args)

	release, err := os.ReadFile(*kernelDir + "/version")
	if err != nil {
		return fmt.Errorf("no kernel in %s: run `make deps` first", *kernelDir)
	}
	start := time.Now()
	opts := diskimage.Options{
		Out: *out, Size: *sizeMiB * layout.MiB,
		Kernel: *kernelDir + "/vmlinuz", KernelRelease: strings.TrimSpace(string(release)),
		Initramfs: *initramfs, Version: *version, VersionB: *versionB,
		AdminPassword: os.Getenv("KEEL_ADMIN_PASSWORD"), GrubTimeout: *timeout, GrubMenuTimeout: *menuTimeout, KernelArgs: *kernelArgs, BuildTime: time.Now(),
	}
	if v, ok := strings.CutPrefix(*app, "demo:"); ok {
		dir, err := os.MkdirTemp("", "keel-app")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		opts.AppPayload = filepath.Join(dir, "app.squashfs")
		if err := appimage.DemoCached(opts.AppPayload, v, filepath.Join(filepath.Dir(*out), "cache", "demoapp")); err != nil {
			return fmt.Errorf("build the demo app %s: %w", v, err)
		}
	} else {
		opts.AppPayload = *app
	}
	if err := diskimage.Build(ctx, opts); err != nil {
		return err
	}
	slog.Info("image written", "path", *out, "version", *version, "version_b", *versionB, "app", *app, "seconds", time.Since(start).Seconds())
	if *qcow != "" {
		cmd := exec.CommandContext(ctx, "qemu-img", "convert", "-O", "qcow2", *out, *qcow+".tmp")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("qemu-img convert (run `make deps` if it is missing): %v: %s", err, b)
		}
		if err := os.Rename(*qcow+".tmp", *qcow); err != nil {
			return err
		}
		slog.Info("qcow2 written", "path", *qcow)
	}
	return nil
}
