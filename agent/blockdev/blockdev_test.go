package blockdev

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindByGPTName(t *testing.T) {
	root := t.TempDir()
	sys := filepath.Join(root, "sys")
	mk := func(dir, uevent, size string) {
		if err := os.MkdirAll(filepath.Join(sys, "devices", dir), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(sys, "devices", dir, "uevent"), []byte(uevent), 0o644)
		os.WriteFile(filepath.Join(sys, "devices", dir, "size"), []byte(size), 0o644)
	}
	mk("nvme0n1", "DEVTYPE=disk\nDEVNAME=nvme0n1\n", "4194304\n")
	mk("nvme0n1/nvme0n1p7", "DEVTYPE=partition\nDEVNAME=nvme0n1p7\nPARTNAME=data\n", "2048\n")
	mk("nvme0n1/nvme0n1p3", "DEVTYPE=partition\nDEVNAME=nvme0n1p3\nPARTNAME=base-a\n", "1024\n")
	cls := filepath.Join(root, "class")
	os.MkdirAll(cls, 0o755)
	for _, n := range []string{"nvme0n1", "nvme0n1/nvme0n1p7", "nvme0n1/nvme0n1p3"} {
		os.Symlink(filepath.Join(sys, "devices", n), filepath.Join(cls, filepath.Base(n)))
	}
	f := Finder{SysClassBlock: cls, Dev: "/dev"}
	p, err := f.Find("data")
	if err != nil {
		t.Fatal(err)
	}
	if p.Device != "/dev/nvme0n1p7" || p.Size != 2048*512 || p.Disk != "/dev/nvme0n1" {
		t.Errorf("got %+v", p)
	}
	if _, err := f.Find("app-a"); err == nil {
		t.Error("found a partition that does not exist")
	}
}
