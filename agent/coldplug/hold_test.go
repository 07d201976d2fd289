package coldplug

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// sataSystem is the fake system with a SATA controller beside the virtio
// disk (0000:00:04.0), as in a QEMU q35 machine, and a disk behind it
// that ahci's probe reveals.
func sataSystem(t *testing.T) *fakeSystem {
	fs := newFakeSystem(t)
	dir := filepath.Join(fs.root, "lib", "modules", testRelease)
	fs.write(filepath.Join(dir, "modules.dep"), modulesDep+
		"kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libata.ko\nkernel/drivers/ata/libata.ko:\nkernel/drivers/scsi/sd_mod.ko:\n")
	fs.write(filepath.Join(dir, "modules.alias"), modulesAlias+
		"alias pci:v00008086d00002922sv*sd*bc*sc*i* ahci\nalias scsi:t-0x00* sd_mod\n")
	fs.device("pci0000:00/0000:00:1f.2", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01")
	fs.reveals["ahci"] = map[string]string{"pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0": "scsi:t-0x00"}
	return fs
}

func TestHoldStorageLoadsTheBootControllersDriversOnly(t *testing.T) {
	fs := sataSystem(t)
	// The nice value each module was inserted at (the raw
	// getpriority(2) is 20 - nice).
	var mu sync.Mutex
	nice := map[string]int{}
	l, err := New(Options{Root: fs.root, Release: testRelease, Insert: func(file, params string) error {
		p, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		nice[strings.TrimSuffix(filepath.Base(file), ".ko")] = 20 - p
		mu.Unlock()
		return fs.insert(file, params)
	}})
	if err != nil {
		t.Fatal(err)
	}
	l.HoldStorage("/devices/pci0000:00/0000:00:04.0/") // the virtio disk's controller
	loaded, err := l.Coldplug(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The virtio disk is below the boot controller and e1000 is no
	// storage driver: both load. ahci waits.
	if !slices.Equal(loaded, fakeSystemModules) {
		t.Errorf("held coldplug loaded %v\nwant %v", loaded, fakeSystemModules)
	}
	if !l.Holding() {
		t.Error("not holding after the coldplug")
	}
	// A device added meanwhile under the held controller waits too.
	l.handleDevice(context.Background(), device{alias: "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", path: "/devices/pci0000:00/0000:00:1f.2"})
	if slices.Contains(fs.inserted, "ahci") {
		t.Fatalf("ahci loaded while held: %v", fs.inserted)
	}

	got := l.ReleaseStorage(context.Background())
	if want := []string{"libata", "ahci"}; !slices.Equal(got, want) {
		t.Errorf("ReleaseStorage loaded %v, want %v", got, want)
	}
	if l.Holding() {
		t.Error("still holding after ReleaseStorage")
	}
	if fs.calls["ahci"] != 1 {
		t.Errorf("ahci inserted %d times", fs.calls["ahci"])
	}
	// Released drivers load while the box serves, behind its requests.
	mu.Lock()
	if nice["ahci"] != 19 || nice["libata"] != 19 || nice["virtio_blk"] != 0 {
		t.Errorf("nice values of the inserts: %v; want 19 for ahci and libata, 0 for virtio_blk", nice)
	}
	mu.Unlock()
	// The disk its probe revealed loads its driver as any new device.
	l.handleDevice(context.Background(), device{alias: "scsi:t-0x00", path: "/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0"})
	if !slices.Contains(fs.inserted, "sd_mod") {
		t.Errorf("sd_mod not loaded after the release: %v", fs.inserted)
	}
	if got := l.ReleaseStorage(context.Background()); len(got) != 0 {
		t.Errorf("a second release loaded %v", got)
	}
}

func TestHoldStorageOfTheSATAControllerHoldsNothingOfIt(t *testing.T) {
	fs := sataSystem(t)
	l := fs.loader()
	l.HoldStorage("/devices/pci0000:00/0000:00:1f.2")
	if _, err := l.Coldplug(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The boot disk is behind ahci, which loads; virtio_blk is for a
	// disk elsewhere and waits.
	if !slices.Contains(fs.inserted, "ahci") || slices.Contains(fs.inserted, "virtio_blk") {
		t.Errorf("inserted %v, want ahci and not virtio_blk", fs.inserted)
	}
	if got := l.ReleaseStorage(context.Background()); !slices.Equal(got, []string{"virtio_blk"}) {
		t.Errorf("ReleaseStorage loaded %v, want [virtio_blk]", got)
	}
}

func TestWithoutHoldEveryStorageDriverLoads(t *testing.T) {
	fs := sataSystem(t)
	l := fs.loader()
	if _, err := l.Coldplug(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"ahci", "virtio_blk", "e1000"} {
		if !slices.Contains(fs.inserted, m) {
			t.Errorf("%s not loaded: %v", m, fs.inserted)
		}
	}
	if l.Holding() || len(l.ReleaseStorage(context.Background())) != 0 {
		t.Error("a loader that was never told to hold held something")
	}
}

func TestOnPath(t *testing.T) {
	dev := "/devices/pci0000:00/0000:00:1c.0/0000:01:00.0"
	for p, want := range map[string]bool{
		dev:                                  true,
		dev + "/nvme/nvme0":                  true,
		"/devices/pci0000:00/0000:00:1c.0":   true, // its bridge
		"/devices/pci0000:00":                true,
		"/devices/pci0000:00/0000:00:1c.0/0": false,
		"/devices/pci0000:00/0000:00:1f.2":   false,
		"/devices/pci0000:00/0000:00:1c.01":  false,
	} {
		if got := onPath(p, dev); got != want {
			t.Errorf("onPath(%s) = %v, want %v", p, got, want)
		}
	}
}
