package apps

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/image/appimage"
)

// loopPartition attaches file to a loop device and describes it in a fake
// sysfs as the partition named name.
func loopPartition(t *testing.T, sys, file, name string) string {
	t.Helper()
	out, err := exec.Command("losetup", "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	d := filepath.Join(sys, filepath.Base(dev))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	uevent := "DEVTYPE=partition\nDEVNAME=" + filepath.Base(dev) + "\nPARTNAME=" + name + "\n"
	if err := os.WriteFile(filepath.Join(d, "uevent"), []byte(uevent), 0o644); err != nil {
		t.Fatal(err)
	}
	return dev
}

// The box's own Mount on real squashfs slot images: the demo's image in
// app-a runs, an empty app-b is skipped, and a mounted slot cannot be
// opened for an install.
func TestBlockMountOfSquashfsSlots(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	b := newBox(t)
	img := filepath.Join(b.root, "demo.squashfs")
	spec := appimage.DemoSpec("1.0.0")
	port := freePort(t)
	spec.Env["PORT"], spec.Ports, spec.Health.HTTP.Port = strconv.Itoa(port), []int{port}, port
	if err := appimage.Build(img, spec, map[string]string{appimage.DemoCommand: demoBin(t, "1.0.0")}); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(b.root, "empty")
	if err := os.WriteFile(empty, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sys := filepath.Join(b.root, "sys")
	devA := loopPartition(t, sys, img, "app-a")
	loopPartition(t, sys, empty, "app-b")

	b.m.Mount = BlockMount(blockdev.Finder{SysClassBlock: sys, Dev: "/dev"})
	if err := b.m.Mount("b", t.TempDir()); !errors.Is(err, ErrEmptySlot) {
		t.Errorf("empty slot: %v", err)
	}
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.m.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if i := info(t, port); i.Version != "1.0.0" || i.UID != DefaultUID {
		t.Errorf("the demo says %+v", i)
	}
	if _, err := os.OpenFile(devA, os.O_RDWR|os.O_EXCL, 0); !errors.Is(err, unix.EBUSY) {
		t.Errorf("opening the mounted slot exclusively: %v", err)
	}
	b.m.Stop()
	f, err := os.OpenFile(devA, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		t.Fatalf("the slot is still busy after Stop: %v", err)
	}
	f.Close()
}
