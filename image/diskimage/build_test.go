package diskimage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/grub"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/image/manifest"
)

func buildTestImage(t *testing.T, versionB string) (string, Options) {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	o := Options{
		Out:           filepath.Join(dir, "keel.img"),
		Kernel:        write("vmlinuz", bytes.Repeat([]byte("K"), 3<<20)),
		Initramfs:     write("initramfs", bytes.Repeat([]byte("I"), 5<<20+17)),
		EFI:           write("BOOTX64.EFI", []byte("MZ fake efi")),
		KernelRelease: "6.1.0-test-amd64",
		Version:       "1.2.3", VersionB: versionB,
		AdminPassword: "preseeded-pw",
		GrubTimeout:   2,
		BuildTime:     time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC),
	}
	if err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	return o.Out, o
}

func TestPartitionTable(t *testing.T) {
	img, _ := buildTestImage(t, "")
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	parts := pt.(*gpt.Table).Partitions
	want := layout.Parts(layout.DefaultSizes)
	if len(parts) != len(want) {
		t.Fatalf("%d partitions, want %d", len(parts), len(want))
	}
	for i, p := range parts {
		w := want[i]
		if p.Name != w.Name || p.Index != w.Number {
			t.Errorf("partition %d: %q #%d, want %q #%d", i, p.Name, p.Index, w.Name, w.Number)
		}
		start := int64(p.Start) * layout.SectorSize
		size := int64(p.End-p.Start+1) * layout.SectorSize
		if start%layout.Align != 0 || size%layout.Align != 0 {
			t.Errorf("%s: start %d size %d not aligned to 1 MiB", p.Name, start, size)
		}
		if w.Name == layout.Data {
			if size < w.Size {
				t.Errorf("data is %d bytes, less than its minimum %d", size, w.Size)
			}
		} else if size != w.Size {
			t.Errorf("%s is %d bytes, want %d", p.Name, size, w.Size)
		}
	}
	if parts[0].Type != gpt.EFISystemPartition {
		t.Errorf("ESP type %s", parts[0].Type)
	}
}

func TestESPAndSlotContents(t *testing.T) {
	img, o := buildTestImage(t, "1.3.0")
	efi, err := ReadESPFile(img, "EFI/BOOT/BOOTX64.EFI")
	if err != nil || string(efi) != "MZ fake efi" {
		t.Errorf("EFI binary: %q %v", efi, err)
	}
	cfg, err := ReadESPFile(img, grub.ConfigPath)
	if err != nil || !bytes.Contains(cfg, []byte("keel_boot_b")) {
		t.Errorf("grub.cfg: %v", err)
	}
	st, which, err := ReadBootState(img)
	if err != nil || which != "primary" {
		t.Fatalf("boot state: %v %s", err, which)
	}
	if want := bootstate.Initial("1.2.3", "1.3.0"); *st != want {
		t.Errorf("boot state %+v, want %+v", *st, want)
	}

	for slot, ver := range map[layout.Label]string{layout.SlotA: "1.2.3", layout.SlotB: "1.3.0"} {
		sq := readSlot(t, img, layout.BasePart(slot))
		for name, src := range map[string]string{manifest.KernelFile: o.Kernel, manifest.InitramfsFile: o.Initramfs} {
			want, _ := os.ReadFile(src)
			if got := readSquashFile(t, sq, name); !bytes.Equal(got, want) {
				t.Errorf("slot %s: %s differs (%d bytes, want %d)", slot, name, len(got), len(want))
			}
		}
		m, err := manifest.ParseBase(readSquashFile(t, sq, manifest.BaseFile))
		if err != nil || m.Version != ver || m.Kernel != o.KernelRelease || !m.BuildTime.Equal(o.BuildTime) {
			t.Errorf("slot %s manifest %+v %v", slot, m, err)
		}
	}
}

func TestDataFileSystemIsClean(t *testing.T) {
	if _, err := exec.LookPath("e2fsck"); err != nil {
		t.Fatal("e2fsck not found: run `make deps` (Debian package e2fsprogs)")
	}
	img, _ := buildTestImage(t, "")
	e := extent(t, img, layout.Data)
	out, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", img, e.Start)).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "keel-data") {
		t.Errorf("e2fsck output does not name the volume: %s", out)
	}
}

func TestTooSmallDiskNamesMinimum(t *testing.T) {
	_, o := buildTestImage(t, "")
	o.Out = filepath.Join(t.TempDir(), "small.img")
	o.Size = 100 * layout.MiB
	err := Build(context.Background(), o)
	min := layout.MinDiskSize(layout.DefaultSizes) / layout.MiB
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("at least %d MiB", min)) {
		t.Errorf("error %v does not name the minimum %d MiB", err, min)
	}
	if _, err := os.Stat(o.Out); err == nil {
		t.Error("a failed build left an image behind")
	}
}

func TestMissingKernelNamesMakeDeps(t *testing.T) {
	_, o := buildTestImage(t, "")
	o.Kernel = "/nonexistent/vmlinuz"
	if err := Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("error %v does not point at make deps", err)
	}
}

func extent(t *testing.T, img, name string) layout.Extent {
	t.Helper()
	e, err := PartitionOf(img, name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func readSlot(t *testing.T, img, name string) *squashfs.FileSystem {
	t.Helper()
	e := extent(t, img, name)
	b, err := file.OpenFromPath(img, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	fs, err := squashfs.Read(b, e.End-e.Start, e.Start, 4096)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return fs
}

func readSquashFile(t *testing.T, fs *squashfs.FileSystem, name string) []byte {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func TestAppPayloadInSlotA(t *testing.T) {
	_, o := buildTestImage(t, "")
	dir := t.TempDir()
	payload := make([]byte, 3<<20+4096)
	for i := range payload {
		payload[i] = byte(i*31 + i>>12)
	}
	o.AppPayload = filepath.Join(dir, "app.squashfs")
	if err := os.WriteFile(o.AppPayload, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	o.Out = filepath.Join(dir, "with-app.img")
	if err := Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, b := extent(t, o.Out, layout.AppA), extent(t, o.Out, layout.AppB)
	got := make([]byte, len(payload)+4096)
	if _, err := f.ReadAt(got, a.Start); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(payload)], payload) || !bytes.Equal(got[len(payload):], make([]byte, 4096)) {
		t.Error("app-a does not hold the payload from its first byte")
	}
	if _, err := f.ReadAt(got, b.Start); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Error("app-b is not empty")
	}

	o.AppPayload = filepath.Join(dir, "missing.squashfs")
	o.Out = filepath.Join(dir, "bad.img")
	if err := Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), "application payload") {
		t.Errorf("missing payload: %v", err)
	}
	o.AppPayload = filepath.Join(dir, "huge.squashfs")
	if err := os.WriteFile(o.AppPayload, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(o.AppPayload, layout.DefaultSizes.App+1); err != nil {
		t.Fatal(err)
	}
	if err := Build(context.Background(), o); err == nil || !strings.Contains(err.Error(), "app-a") {
		t.Errorf("payload larger than the slot: %v", err)
	}
	if _, err := os.Stat(o.Out); err == nil {
		t.Error("a failed build left an image behind")
	}
}
