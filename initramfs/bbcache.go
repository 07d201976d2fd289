package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage/builder"
	"github.com/u-root/mkuimage/uimage/initramfs"
	"github.com/u-root/uio/llog"
)

// cachedBusybox is a builder.Builder that keeps the u-root busybox between
// runs. gobusybox rewrites every command's source and builds with `go build
// -a` in GOPATH mode, which takes half a minute and dominates every
// initramfs build, while the busybox only changes when the command list,
// the module's dependencies or the toolchain do — its cache key.
type cachedBusybox struct {
	dir string // cache directory; "" builds every time
	log *slog.Logger
	// size is the busybox's size, for the report.
	size int64
}

var _ builder.Builder = (*cachedBusybox)(nil)

// DefaultBinaryDir implements builder.Builder.
func (cachedBusybox) DefaultBinaryDir() string { return "bbin" }

// Build implements builder.Builder: bbin/bb plus a bbin/<cmd> -> bb link per
// command, exactly what gobusybox's own builder adds.
func (c *cachedBusybox) Build(l *llog.Logger, af *initramfs.Files, opts builder.Opts) error {
	bb, err := c.binary(l, opts)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(bb); err == nil {
		c.size = fi.Size()
	}
	if err := af.AddFile(bb, "bbin/bb"); err != nil {
		return err
	}
	for _, pkg := range opts.Packages {
		if err := af.AddRecord(cpio.Symlink(path.Join("bbin", path.Base(pkg)), "bb")); err != nil {
			return err
		}
	}
	return nil
}

// binary returns the path of a busybox for opts, from the cache or built.
func (c *cachedBusybox) binary(l *llog.Logger, opts builder.Opts) (string, error) {
	if c.dir == "" {
		return c.build(l, opts)
	}
	key, err := busyboxKey(opts)
	if err != nil {
		return "", err
	}
	cached := filepath.Join(c.dir, "bb-"+key)
	if _, err := os.Stat(cached); err == nil {
		c.log.Debug("busybox from cache", "file", cached)
		return cached, nil
	}
	bb, err := c.build(l, opts)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return "", err
	}
	// Older busyboxes are dead weight once the key moved on.
	if old, _ := filepath.Glob(filepath.Join(c.dir, "bb-*")); len(old) > 0 {
		for _, o := range old {
			os.Remove(o)
		}
	}
	if err := copyFile(bb, cached+".tmp"); err != nil {
		return "", fmt.Errorf("cache busybox: %w", err)
	}
	if err := os.Rename(cached+".tmp", cached); err != nil {
		return "", fmt.Errorf("cache busybox: %w", err)
	}
	return cached, nil
}

func (c *cachedBusybox) build(l *llog.Logger, opts builder.Opts) (string, error) {
	c.log.Info("building u-root busybox (cached afterwards)", "commands", len(opts.Packages))
	// The real builder writes opts.TempDir/bb; its file list is ours to
	// fill, so hand it a scratch one.
	if err := (&builder.GBBBuilder{}).Build(l, initramfs.NewFiles(), opts); err != nil {
		return "", err
	}
	return filepath.Join(opts.TempDir, "bb"), nil
}

// busyboxKey hashes everything the busybox binary depends on: the command
// directories (module cache paths carry their versions), the main module's
// go.mod and go.sum (versions of everything they import), the toolchain and
// the target environment.
func busyboxKey(opts builder.Opts) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, "keel busybox cache v1")
	out, err := exec.Command("go", "env", "GOVERSION", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	fields := strings.Fields(string(out))
	if len(fields) != 2 {
		return "", fmt.Errorf("go env GOVERSION GOMOD: unexpected %q", out)
	}
	fmt.Fprintln(h, fields[0])
	gomod := fields[1]
	for _, f := range []string{gomod, strings.TrimSuffix(gomod, ".mod") + ".sum"} {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("busybox cache key: %w", err)
		}
		h.Write(b)
	}
	fmt.Fprintln(h, opts.Env.String(), os.Getenv("GOAMD64"), opts.BuildOpts)
	pkgs := append([]string(nil), opts.Packages...)
	sort.Strings(pkgs)
	for _, p := range pkgs {
		fmt.Fprintln(h, p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
