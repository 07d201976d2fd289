package main

import (
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/manifest"
)

// listFlag is a flag that may repeat; each value may also be a
// comma-separated list when split is set.
type listFlag struct {
	values []string
	split  bool
}

func (l *listFlag) String() string { return strings.Join(l.values, ",") }

func (l *listFlag) Set(s string) error {
	if !l.split {
		l.values = append(l.values, s)
		return nil
	}
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			l.values = append(l.values, v)
		}
	}
	return nil
}

// makePackage is `image package`: it signs a payload (a squashfs file, or
// a base squashfs it builds from the kernel and initramfs of the build
// tree) into a package, then opens the result as a box would.
func makePackage(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("package", flag.ExitOnError)
	kind := fl.String("kind", "base", "`base` or app")
	name := fl.String("name", "keel", "package name")
	version := fl.String("version", "", "semantic `version`, e.g. 1.2.3 (required)")
	payload := fl.String("payload", "", "the slot's squashfs `file`")
	fromBuild := fl.Bool("base-from-build", false, "build the base squashfs from -kernel-dir and -initramfs instead of -payload")
	kernelDir := fl.String("kernel-dir", "build/kernel", "with -base-from-build: unpacked kernel from `make deps` (vmlinuz, version)")
	initramfs := fl.String("initramfs", "build/initramfs.cpio.lz4", "with -base-from-build: initramfs from `make initramfs`")
	keyPath := fl.String("key", "build/keys/vendor.key", "vendor signing key (PEM, from `image keygen`)")
	var requires, hardware listFlag
	hardware.split = true
	fl.Var(&requires, "requires", "a requirement such as 'base >= 3.3.2' (repeat for more)")
	fl.Var(&hardware, "hardware", "compatible hardware `models`, comma-separated or repeated; none means any")
	wait := fl.Duration("wait", 0, "how long a box waits after this package before the next of its kind, e.g. 24h")
	notes := fl.String("notes", "", "release notes `file` (plain text)")
	floor := fl.String("floor", "", "a base's anti-rollback floor: once committed, the box never runs or installs a base below this `version`")
	out := fl.String("o", "", "package to write (default build/packages/NAME-KIND-VERSION.kpkg)")
	fl.Parse(args)
	if fl.NArg() > 0 {
		return fmt.Errorf("package: unexpected arguments %q", fl.Args())
	}

	v, err := kpkg.ParseVersion(*version)
	if err != nil {
		return fmt.Errorf("package: -version: %w", err)
	}
	m := kpkg.Manifest{Kind: kpkg.Kind(*kind), Name: *name, Version: v, Hardware: hardware.values, Wait: kpkg.Duration(*wait)}
	if *floor != "" {
		if m.Floor, err = kpkg.ParseVersion(*floor); err != nil {
			return fmt.Errorf("package: -floor: %w", err)
		}
	}
	for _, s := range requires.values {
		r, err := kpkg.ParseRequirement(s)
		if err != nil {
			return fmt.Errorf("package: -requires: %w", err)
		}
		m.Requires = append(m.Requires, r)
	}
	if *notes != "" {
		b, err := os.ReadFile(*notes)
		if err != nil {
			return fmt.Errorf("package: -notes: %w", err)
		}
		m.Notes = string(b)
	}
	keyPEM, err := os.ReadFile(*keyPath)
	if err != nil {
		return fmt.Errorf("package: signing key: %w (make one with `go run ./image keygen`)", err)
	}
	key, err := kpkg.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("package: %s: %w", *keyPath, err)
	}
	if *out == "" {
		*out = filepath.Join("build", "packages", fmt.Sprintf("%s-%s-%s.kpkg", m.Name, m.Kind, m.Version))
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return fmt.Errorf("package: %w", err)
	}

	switch {
	case *fromBuild && *payload != "":
		return fmt.Errorf("package: give -payload or -base-from-build, not both")
	case *fromBuild:
		if m.Kind != kpkg.KindBase {
			return fmt.Errorf("package: -base-from-build makes a base package, not %q", m.Kind)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(*out), ".kpkg-")
		if err != nil {
			return fmt.Errorf("package: %w", err)
		}
		defer os.RemoveAll(tmp)
		*payload = filepath.Join(tmp, "base.squashfs")
		if err := baseFromBuild(*payload, *kernelDir, *initramfs, m.Name, m.Version.String()); err != nil {
			return fmt.Errorf("package: %w", err)
		}
	case *payload == "":
		return fmt.Errorf("package: give the slot image with -payload FILE (or -base-from-build)")
	}
	if err := writePackageFile(*out, m, *payload, key); err != nil {
		return err
	}
	return describePackage(*out, []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}, stdout)
}

// baseFromBuild writes a base slot's squashfs from the build tree, the
// same way `image build` fills slot a.
func baseFromBuild(out, kernelDir, initramfs, name, version string) error {
	release, err := os.ReadFile(filepath.Join(kernelDir, "version"))
	if err != nil {
		return fmt.Errorf("no kernel in %s: run `make deps` first", kernelDir)
	}
	if _, err := os.Stat(initramfs); err != nil {
		return fmt.Errorf("initramfs %s not found: run `make initramfs` first", initramfs)
	}
	return diskimage.BaseSquashfs(out, filepath.Join(kernelDir, "vmlinuz"), initramfs, manifest.Base{
		Kind: "base", Name: name, Version: version, BuildTime: buildTime(),
		Kernel: strings.TrimSpace(string(release)),
	})
}

// buildTime honours SOURCE_DATE_EPOCH, so a package can be rebuilt bit for
// bit.
func buildTime() time.Time {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC()
		}
	}
	return time.Now().UTC()
}

// writePackageFile writes the package next to out and renames it into
// place, so out is never a partial package.
func writePackageFile(out string, m kpkg.Manifest, payloadPath string, key ed25519.PrivateKey) error {
	src, err := os.Open(payloadPath)
	if err != nil {
		return fmt.Errorf("package: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), ".kpkg-*.tmp")
	if err != nil {
		return fmt.Errorf("package: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	if err := commitFile(tmp, out, kpkg.Write(tmp, m, src, key)); err != nil {
		return fmt.Errorf("package %s: %w", out, err)
	}
	return nil
}

// commitFile finishes a file written to tmp, unless writing it failed
// (err): synced, closed, readable by all, renamed to out. A crash leaves
// either the old out or the new one, never half of one.
func commitFile(tmp *os.File, out string, err error) error {
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), out)
	}
	return err
}
