package install

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"keel.dev/keel/agent/blockdev"
)

func TestBlockDevicesOpensTheSlotByName(t *testing.T) {
	root := t.TempDir()
	sys, cls, dev := filepath.Join(root, "sys"), filepath.Join(root, "class"), filepath.Join(root, "dev")
	for _, d := range []string{cls, dev} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	part := func(name, devname, sectors string) {
		d := filepath.Join(sys, "devices/vda", devname)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "uevent"), []byte("DEVTYPE=partition\nDEVNAME="+devname+"\nPARTNAME="+name+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "size"), []byte(sectors+"\n"), 0o644)
		os.Symlink(d, filepath.Join(cls, devname))
		// The "device" is a regular file of 1 MiB.
		os.WriteFile(filepath.Join(dev, devname), make([]byte, 1<<20), 0o644)
	}
	part("base-a", "vda3", "2048")
	part("base-b", "vda4", "0") // no size in sysfs: the device says
	open := BlockDevices(blockdev.Finder{SysClassBlock: cls, Dev: dev})

	for _, slot := range []string{"a", "b"} {
		d, size, err := open(slot)
		if err != nil {
			t.Fatal(err)
		}
		if size != 1<<20 {
			t.Errorf("slot %s: size %d", slot, size)
		}
		if _, err := d.WriteAt([]byte("hsqs"), 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	if b, _ := os.ReadFile(filepath.Join(dev, "vda4")); !bytes.HasPrefix(b, []byte("hsqs")) {
		t.Error("slot b's device was not written")
	}
	if _, _, err := BlockDevices(blockdev.Finder{SysClassBlock: t.TempDir(), Dev: dev})("a"); err == nil || !strings.Contains(err.Error(), `"base-a"`) {
		t.Errorf("missing partition: %v", err)
	}
}

func TestAppBlockDevicesOpensTheAppSlot(t *testing.T) {
	root := t.TempDir()
	cls, dev := filepath.Join(root, "class"), filepath.Join(root, "dev")
	d := filepath.Join(root, "sys/devices/vda/vda6")
	for _, p := range []string{cls, dev, d} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(d, "uevent"), []byte("DEVTYPE=partition\nDEVNAME=vda6\nPARTNAME=app-b\n"), 0o644)
	os.WriteFile(filepath.Join(d, "size"), []byte("8\n"), 0o644)
	os.Symlink(d, filepath.Join(cls, "vda6"))
	os.WriteFile(filepath.Join(dev, "vda6"), make([]byte, 4096), 0o644)
	open := AppBlockDevices(blockdev.Finder{SysClassBlock: cls, Dev: dev})
	f, size, err := open("b")
	if err != nil || size != 4096 {
		t.Fatalf("%v, size %d", err, size)
	}
	f.WriteAt([]byte("hsqs"), 0)
	f.Close()
	if b, _ := os.ReadFile(filepath.Join(dev, "vda6")); !bytes.HasPrefix(b, []byte("hsqs")) {
		t.Error("app-b's device was not written")
	}
	if _, _, err := open("a"); err == nil || !strings.Contains(err.Error(), `"app-a"`) {
		t.Errorf("missing partition: %v", err)
	}
}
