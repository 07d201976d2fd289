package install

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/image/layout"
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

	for _, slot := range layout.Labels {
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

// The "device" here is a regular file, where O_EXCL without O_CREAT does
// nothing: the exclusive open's refusal of a held slot (EBUSY) is tested
// on a loop device by TestAppBlockDevicesRefusesAHeldSlot.
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

// An application slot that something holds (a mount does, as does another
// exclusive open) is refused with EBUSY rather than written under it. On a
// block device only, so it needs root and a loop device.
func TestAppBlockDevicesRefusesAHeldSlot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	root := t.TempDir()
	img := filepath.Join(root, "app-b.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	cls := filepath.Join(root, "class")
	d := filepath.Join(cls, filepath.Base(dev))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	uevent := "DEVTYPE=partition\nDEVNAME=" + filepath.Base(dev) + "\nPARTNAME=app-b\n"
	if err := os.WriteFile(filepath.Join(d, "uevent"), []byte(uevent), 0o644); err != nil {
		t.Fatal(err)
	}
	open := AppBlockDevices(blockdev.Finder{SysClassBlock: cls, Dev: filepath.Dir(dev)})

	holder, err := os.OpenFile(dev, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f, _, err := open("b"); !errors.Is(err, unix.EBUSY) {
		if err == nil {
			f.Close()
		}
		t.Errorf("opening a held slot: %v", err)
	}
	holder.Close()
	f, size, err := open("b")
	if err != nil || size != 1<<20 {
		t.Fatalf("%v, size %d", err, size)
	}
	f.Close()
}
