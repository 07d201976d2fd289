package diskimage

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/mkuimage/cpio"

	"keel.dev/keel/image/initrd"
	"keel.dev/keel/image/manifest"
)

// writeInitramfs writes an archive in keel's format with an agent and two
// tools, as the initramfs builder lays them out.
func writeInitramfs(t *testing.T, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w, err := initrd.NewWriter(f)
	if err != nil {
		t.Fatal(err)
	}
	recs := []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.StaticFile("bin/agent", "the agent", 0o755),
		cpio.Symlink("init", "bin/agent"),
		cpio.Directory("bbin", 0o755),
		cpio.StaticFile("bbin/bb", "the busybox", 0o755),
		cpio.Symlink("bbin/uname", "bb"),
	}
	if err := cpio.WriteRecords(w, recs); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// The tools move from the initramfs into the slot's squashfs: the kernel
// unpacks less, and the agent finds them where it mounts the slot.
func TestBaseSquashfsMovesToolsIntoTheSlot(t *testing.T) {
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Skip("unsquashfs not installed (Debian's squashfs-tools: make deps)")
	}
	dir := t.TempDir()
	kernel, ir, sq := filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initramfs"), filepath.Join(dir, "base.sqfs")
	os.WriteFile(kernel, []byte("a kernel"), 0o644)
	writeInitramfs(t, ir)
	if err := BaseSquashfs(sq, kernel, ir, manifest.Base{Kind: "base", Name: "keel", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("unsquashfs", "-lln", sq).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v: %s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"-rwxr-xr-x 0/0                      11 ", "squashfs-root/bbin/bb\n",
		"squashfs-root/vmlinuz\n", "squashfs-root/initramfs\n", "squashfs-root/manifest.json\n",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("the slot's listing lacks %q:\n%s", want, listing)
		}
	}
	// The initramfs in the slot keeps the folder, as a mount point, and
	// everything else.
	x := filepath.Join(dir, "x")
	if out, err := exec.Command("unsquashfs", "-d", x, sq, manifest.InitramfsFile).CombinedOutput(); err != nil {
		t.Fatalf("unsquashfs: %v: %s", err, out)
	}
	var names []string
	for _, r := range records(t, filepath.Join(x, manifest.InitramfsFile)) {
		names = append(names, fmt.Sprintf("%s:%o:%d", r.Name, r.Mode, r.FileSize))
	}
	// bbin/bb stays as an empty file to mount the slot's on, and the link
	// to it stays (go-diskfs writes no links).
	if got, want := strings.Join(names, " "), "bin:40755:0 bin/agent:100755:9 init:120777:9 bbin:40755:0 bbin/bb:100755:0 bbin/uname:120777:2"; got != want {
		t.Errorf("the slot's initramfs holds\n%s\nwant\n%s", got, want)
	}
}

// An initramfs in another format (a test's plain cpio) goes in unchanged.
func TestBaseSquashfsKeepsOtherInitramfs(t *testing.T) {
	dir := t.TempDir()
	ir := filepath.Join(dir, "plain.cpio")
	var b bytes.Buffer
	w := cpio.Newc.Writer(&b)
	if err := cpio.WriteRecords(w, []cpio.Record{cpio.StaticFile("bbin/bb", "x", 0o755)}); err != nil {
		t.Fatal(err)
	}
	cpio.WriteTrailer(w)
	os.WriteFile(ir, b.Bytes(), 0o644)
	boot, tools, err := splitTools(ir, filepath.Join(dir, "out"))
	if err != nil || boot != ir || len(tools) != 0 {
		t.Errorf("splitTools(plain cpio) = %q, %d tools, %v; want it unchanged", boot, len(tools), err)
	}
}

// A base slot of this tree's real kernel and initramfs reads back whole
// with squashfs-tools, which read the format as the kernel and GRUB do:
// the kernel as built, and the initramfs's records with the tools' busybox
// beside it. go-diskfs's own reader is no judge: at 4 KiB blocks go-diskfs
// v1.9.4 wrote, for some file sizes, a squashfs that it read back fine and
// that unsquashfs and GRUB could not read, so a release could carry a slot
// that never boots.
func TestBaseSlotOfTheRealInitramfsReadsBack(t *testing.T) {
	initramfs, kernelDir := os.Getenv("KEEL_INITRAMFS"), os.Getenv("KEEL_KERNEL_DIR")
	if initramfs == "" || kernelDir == "" {
		t.Skip("KEEL_INITRAMFS and KEEL_KERNEL_DIR name the built initramfs and kernel (make test sets them)")
	}
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Fatal("unsquashfs not installed (Debian's squashfs-tools: make deps), and make test asked for this check")
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
	if got, want := readAll(t, filepath.Join(x, manifest.KernelFile)), readAll(t, kernel); !bytes.Equal(got, want) {
		t.Errorf("the slot's kernel (%d bytes) differs from %s (%d bytes)", len(got), kernel, len(want))
	}
	if b := readAll(t, filepath.Join(x, manifest.BaseFile)); !strings.Contains(string(b), `"version": "1.0.0"`) {
		t.Errorf("the slot's %s: %s", manifest.BaseFile, b)
	}
	// Every record of the built initramfs is in the slot's, with the same
	// content, but for the tools' programs (the busybox), which are in the
	// slot beside it, emptied in its initramfs.
	built, inSlot := records(t, initramfs), records(t, filepath.Join(x, manifest.InitramfsFile))
	if len(built) != len(inSlot) {
		t.Fatalf("the slot's initramfs has %d records, the built one %d", len(inSlot), len(built))
	}
	moved := 0
	for i, r := range built {
		s := inSlot[i]
		want, got := content(t, r), content(t, s)
		if strings.HasPrefix(r.Name, manifest.ToolsDir+"/") && len(want) > 0 && len(got) == 0 {
			moved++
			got = readAll(t, filepath.Join(x, r.Name))
		}
		if s.Name != r.Name || s.Mode != r.Mode || !bytes.Equal(got, want) {
			t.Errorf("record %d: the slot has %s (mode %o, %d bytes), the build %s (mode %o, %d bytes)", i, s.Name, s.Mode, len(got), r.Name, r.Mode, len(want))
		}
	}
	if moved == 0 {
		t.Errorf("no program of %s/ was moved into the slot", manifest.ToolsDir)
	}
}

func readAll(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func records(t *testing.T, p string) []cpio.Record {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := initrd.ReadRecords(f)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return recs
}

func content(t *testing.T, r cpio.Record) []byte {
	t.Helper()
	if r.ReaderAt == nil {
		return nil
	}
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatalf("%s: %v", r.Name, err)
	}
	return b
}
