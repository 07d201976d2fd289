package vmtest

import (
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
)

// strayBytes is the stray disk's size.
const strayBytes = 64 << 20

// strayDisk writes a disk with the GPT names of a keel disk and nothing
// in its partitions: an installer stick, or a disk moved in from another
// box.
func strayDisk(t *testing.T, path string) {
	t.Helper()
	d, err := diskfs.Create(path, strayBytes, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var parts []*gpt.Partition
	for i, name := range []string{layout.ESP, layout.BaseA, layout.Data} {
		start := uint64(2048 + i*32768)
		parts = append(parts, &gpt.Partition{Index: i + 1, Name: name, Type: gpt.LinuxFilesystem, Start: start, End: start + 32767})
	}
	if err := d.Partition(&gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: parts}); err != nil {
		t.Fatal(err)
	}
}

// A second disk whose partitions carry the names esp, base-a and data
// (on AHCI, so it is sda, ahead of the boot disk vda in every listing):
// the box boots and runs from its own disk, found by the ESP GUID GRUB
// passes, and never touches the other disk (its empty "data" would
// otherwise be formatted).
func TestStrayDiskIsNotUsed(t *testing.T) {
	e := Require(t)
	t.Parallel()
	stray := filepath.Join(t.TempDir(), "stray.img")
	strayDisk(t, stray)
	before := hashRange(t, stray, 0, strayBytes)
	vm := Boot(t, qemu.Config{Image: e.Image, ExtraArgs: []string{
		"-device", "ahci,id=stray",
		"-drive", "file=" + stray + ",format=raw,if=none,id=straydisk",
		"-device", "ide-hd,drive=straydisk,bus=stray.0",
	}})
	WaitReady(t, vm)
	st := GetStatus(t, vm, Password(t, vm))
	if st.Base.Slot != "a" || !st.Boot.Committed || st.Boot.Recovery || st.Data.State != "mounted" {
		t.Errorf("status with a stray disk: %+v", st)
	}
	out := vm.Output()
	if !strings.Contains(out, "boot disk") || !strings.Contains(out, "disk=/dev/vda") {
		t.Errorf("the console does not show the boot disk found by its ESP:\n%s", tail(out, 3000))
	}
	PowerOff(t, vm)
	if hashRange(t, stray, 0, strayBytes) != before {
		t.Error("the stray disk was written")
	}
}
