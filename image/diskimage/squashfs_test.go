package diskimage

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"keel.dev/keel/image/manifest"
)

// A base slot of this tree's real kernel and initramfs reads back whole
// with squashfs-tools, which read the format as the kernel and GRUB do.
// go-diskfs's own reader is no judge: for some file sizes go-diskfs
// v1.9.4 wrote a squashfs that it read back fine and that unsquashfs and
// GRUB could not read, so a release could carry a slot that never boots.
func TestBaseSlotOfTheRealInitramfsReadsBack(t *testing.T) {
	initramfs, kernelDir := os.Getenv("KEEL_INITRAMFS"), os.Getenv("KEEL_KERNEL_DIR")
	if initramfs == "" || kernelDir == "" {
		t.Skip("KEEL_INITRAMFS and KEEL_KERNEL_DIR name the built initramfs and kernel (make test sets them)")
	}
	// make test runs it: there, a missing unsquashfs is a missing install
	// step, not a reason to pass.
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Fatal("unsquashfs not installed (Debian's squashfs-tools: make deps)")
	}
	kernel := filepath.Join(kernelDir, "vmlinuz")
	dir := t.TempDir()
	sq := filepath.Join(dir, "base.squashfs")
	if err := BaseSquashfs(sq, kernel, initramfs, manifest.Base{Kind: "base", Name: "keel", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	x := filepath.Join(dir, "x")
	if out, err := exec.Command("unsquashfs", "-no-progress", "-d", x, sq).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs cannot read the slot: %v: %s", err, out)
	}
	for name, src := range map[string]string{manifest.KernelFile: kernel, manifest.InitramfsFile: initramfs} {
		got, err := os.ReadFile(filepath.Join(x, name))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("the slot's %s (%d bytes) differs from %s (%d bytes)", name, len(got), src, len(want))
		}
	}
	if b, err := os.ReadFile(filepath.Join(x, manifest.BaseFile)); err != nil || !strings.Contains(string(b), `"version": "1.0.0"`) {
		t.Errorf("the slot's %s: %v %s", manifest.BaseFile, err, b)
	}
}
