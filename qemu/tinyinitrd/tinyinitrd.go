// Package tinyinitrd writes the smallest initramfs: one static init and a
// console node, zstd-compressed. The boot floor of `make bench` and the
// kernel-panic fixture of the VM tests use it.
package tinyinitrd

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/mkuimage/cpio"
)

// Build compiles the Go command pkg (run in dir) as a static binary.
func Build(dir, pkg, out string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOAMD64=v1")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %v: %s", pkg, err, b)
	}
	return nil
}

// Write writes an initramfs to out holding init as /init.
func Write(out, init string) error {
	bin, err := os.ReadFile(init)
	if err != nil {
		return err
	}
	var raw bytes.Buffer
	w := cpio.Newc.Writer(&raw)
	recs := []cpio.Record{
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.StaticRecord(bin, cpio.Info{Name: "init", Mode: 0o100755}),
	}
	if err := cpio.WriteRecords(w, recs); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	enc, err := zstd.NewWriter(f)
	if err != nil {
		return err
	}
	if _, err := io.Copy(enc, &raw); err != nil {
		return err
	}
	return enc.Close()
}
