package blockdev

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// gptDisk writes a small disk image at path with partitions named esp
// (with GUID espGUID) and data.
func gptDisk(t *testing.T, path, espGUID string) {
	t.Helper()
	d, err := diskfs.Create(path, 8<<20, diskfs.SectorSizeDefault)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Name: "esp", Type: gpt.EFISystemPartition, Start: 2048, End: 6143, GUID: espGUID},
		{Index: 2, Name: "data", Type: gpt.LinuxFilesystem, Start: 6144, End: 14335},
	}}
	if err := d.Partition(tbl); err != nil {
		t.Fatal(err)
	}
}

// Two disks with the same layout: the boot disk is the one whose ESP has
// the GUID GRUB passed; a finder on it finds its own partitions, and a
// finder on any disk refuses the duplicates.
func TestBootDiskAndDuplicates(t *testing.T) {
	root := t.TempDir()
	sys, cls, dev := filepath.Join(root, "sys"), filepath.Join(root, "class"), filepath.Join(root, "dev")
	for _, d := range []string{cls, dev} {
		os.MkdirAll(d, 0o755)
	}
	mk := func(dir, uevent string) {
		os.MkdirAll(filepath.Join(sys, dir), 0o755)
		os.WriteFile(filepath.Join(sys, dir, "uevent"), []byte(uevent), 0o644)
		os.WriteFile(filepath.Join(sys, dir, "size"), []byte("4096\n"), 0o644)
		os.Symlink(filepath.Join(sys, dir), filepath.Join(cls, filepath.Base(dir)))
	}
	const bootESP, otherESP = "5a7c0e2b-1f3d-4c8a-9b6e-2d4f8a1c3e5b", "0b1c2d3e-4f5a-4b7c-8d9e-0f1a2b3c4d5e"
	gptDisk(t, filepath.Join(dev, "vda"), otherESP) // an installer stick found first
	gptDisk(t, filepath.Join(dev, "vdb"), bootESP)
	for _, d := range []string{"vda", "vdb"} {
		mk(d, "DEVTYPE=disk\nDEVNAME="+d+"\n")
		mk(d+"/"+d+"1", "DEVTYPE=partition\nDEVNAME="+d+"1\nPARTNAME=esp\n")
		mk(d+"/"+d+"2", "DEVTYPE=partition\nDEVNAME="+d+"2\nPARTNAME=data\n")
	}
	any := Finder{SysClassBlock: cls, Dev: dev}
	if _, err := any.Find("data"); !errors.Is(err, ErrDuplicate) || !strings.Contains(err.Error(), "vda2") || !strings.Contains(err.Error(), "vdb2") {
		t.Errorf("duplicate names on two disks: %v", err)
	}
	disk, err := any.BootDisk(strings.ToUpper(bootESP))
	if err != nil || disk != filepath.Join(dev, "vdb") {
		t.Fatalf("boot disk %q, %v", disk, err)
	}
	boot := Finder{SysClassBlock: cls, Dev: dev, Disk: disk}
	if p, err := boot.Find("data"); err != nil || p.Device != filepath.Join(dev, "vdb2") {
		t.Errorf("data on the boot disk: %+v %v", p, err)
	}
	if _, err := any.BootDisk("11111111-2222-4333-8444-555555555555"); err == nil {
		t.Error("a boot disk was found for an ESP no disk has")
	}
}
