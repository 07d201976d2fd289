// Package diskimage writes a keel disk image: the GPT of package layout, the
// ESP with GRUB and the boot state, the base slots' squashfs, the
// application slots (empty, or app-a holding an application image) and an
// ext4 data partition, all without root or loop devices.
package diskimage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"keel.dev/keel/agent/users"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/dataformat"
	"keel.dev/keel/image/grub"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/image/manifest"
)

// Options say what goes into the image.
type Options struct {
	Out           string       // raw image path
	Size          int64        // whole disk in bytes; 0 means DefaultSize
	Sizes         layout.Sizes // zero value means layout.DefaultSizes
	Kernel        string       // bzImage
	KernelRelease string
	Initramfs     string
	Version       string // base version in slot a
	VersionB      string // when set, slot b holds the same base with this version
	AdminPassword string // preseeded initial admin password; empty: random at first boot
	GrubTimeout   int    // seconds GRUB waits, menu hidden, to boot the default slot
	// GrubMenuTimeout is the seconds the menu waits, shown, after a
	// fallback to the other slot and in recovery; 0 means 5.
	GrubMenuTimeout int
	KernelArgs      string // added to every GRUB entry's kernel command line
	BuildTime       time.Time
	EFI             string // prebuilt GRUB EFI binary; empty: build one
	// AppPayload is an application slot image (a squashfs with app.json,
	// see image/appimage) written into app-a from its first byte; the agent
	// finds and starts it at first boot. Empty leaves the app slots empty.
	AppPayload string
}

// DefaultSize is the VM image size: the layout plus a data partition of
// about 1 GiB. The raw file is sparse and the qcow2 small.
const DefaultSize = 2 << 30

// PreseedFile is where, inside the data file system, the image leaves first
// boot settings for the agent, which deletes the file after using it.
const PreseedFile = "keel/preseed.json"

// Preseed is the content of PreseedFile. The agent reads it with a copy of
// this type (importing this package would put go-diskfs in the agent).
type Preseed struct {
	// AdminPasswordHash is the first admin password as the box stores it
	// (users.HashPassword): hashed here, natively, rather than at first
	// boot on a possibly emulated CPU, and never in the image in clear.
	AdminPasswordHash string `json:"admin_password_hash,omitempty"`
}

// Build writes the image.
func Build(ctx context.Context, o Options) error {
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Sizes == (layout.Sizes{}) {
		o.Sizes = layout.DefaultSizes
	}
	if o.Version == "" {
		return fmt.Errorf("image: a base version is required")
	}
	for _, f := range []struct{ what, path string }{{"kernel", o.Kernel}, {"initramfs", o.Initramfs}} {
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("image: %s %q not found: run `make deps` and `make initramfs` first", f.what, f.path)
		}
	}
	if o.AppPayload != "" {
		if _, err := os.Stat(o.AppPayload); err != nil {
			return fmt.Errorf("image: application payload: %w", err)
		}
	}
	exts, err := layout.Extents(o.Sizes, o.Size)
	if err != nil {
		return fmt.Errorf("image: %w", err)
	}
	work, err := os.MkdirTemp(filepath.Dir(o.Out), ".keel-image")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// Build the pieces first so a failure leaves no half image behind.
	efi := o.EFI
	if efi == "" {
		efi = filepath.Join(work, "BOOTX64.EFI")
		if err := grub.BuildEFI(ctx, efi); err != nil {
			return err
		}
	}
	slots := map[layout.Label]string{layout.SlotA: o.Version}
	if o.VersionB != "" {
		slots[layout.SlotB] = o.VersionB
	}
	squash := map[layout.Label]string{}
	for slot, ver := range slots {
		out := filepath.Join(work, layout.BasePart(slot)+".squashfs")
		m := manifest.Base{Kind: "base", Name: "keel", Version: ver, BuildTime: o.BuildTime.UTC(), Kernel: o.KernelRelease}
		if err := BaseSquashfs(out, o.Kernel, o.Initramfs, m); err != nil {
			return err
		}
		squash[slot] = out
	}

	tmpOut := o.Out + ".tmp"
	os.Remove(tmpOut)
	d, err := diskfs.Create(tmpOut, o.Size, diskfs.SectorSize512)
	if err != nil {
		return fmt.Errorf("image: create %s: %w", tmpOut, err)
	}
	defer os.Remove(tmpOut)
	if err := d.Partition(gptTable(exts)); err != nil {
		return fmt.Errorf("image: write partition table: %w", err)
	}
	if err := writeESP(d, exts, efi, o); err != nil {
		return err
	}
	for slot, path := range squash {
		if err := writePartition(d, exts, layout.BasePart(slot), path); err != nil {
			return err
		}
	}
	if o.AppPayload != "" {
		if err := writePartition(d, exts, layout.AppPart(layout.SlotA), o.AppPayload); err != nil {
			return err
		}
	}
	if err := writeData(d, exts, o); err != nil {
		return err
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return os.Rename(tmpOut, o.Out)
}

func gptTable(exts []layout.Extent) *gpt.Table {
	t := &gpt.Table{LogicalSectorSize: layout.SectorSize, PhysicalSectorSize: layout.SectorSize, ProtectiveMBR: true}
	for _, e := range exts {
		typ := gpt.LinuxFilesystem
		switch e.Name {
		case layout.ESP:
			typ = gpt.EFISystemPartition
		case layout.BIOS:
			typ = gpt.BIOSBoot
		}
		t.Partitions = append(t.Partitions, &gpt.Partition{
			Index: e.Number, Name: e.Name, Type: typ,
			Start: uint64(e.Start / layout.SectorSize), End: uint64(e.End/layout.SectorSize) - 1,
			Size: uint64(e.End - e.Start),
		})
	}
	return t
}

func writeESP(d *disk.Disk, exts []layout.Extent, efi string, o Options) error {
	e, _ := layout.Find(exts, layout.ESP)
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: e.Number, FSType: filesystem.TypeFat32, VolumeLabel: "KEEL-ESP"})
	if err != nil {
		return fmt.Errorf("image: ESP: %w", err)
	}
	cfg, err := grub.Config(grub.Params{Timeout: o.GrubTimeout, MenuTimeout: o.GrubMenuTimeout, KernelArgs: o.KernelArgs})
	if err != nil {
		return err
	}
	st := bootstate.Initial(o.Version, o.VersionB)
	env, err := st.Encode()
	if err != nil {
		return err
	}
	efiBin, err := os.ReadFile(efi)
	if err != nil {
		return err
	}
	for _, dir := range []string{"EFI", "EFI/BOOT", "EFI/keel"} {
		if err := fs.Mkdir(dir); err != nil {
			return fmt.Errorf("image: ESP: mkdir %s: %w", dir, err)
		}
	}
	files := []struct {
		name string
		data []byte
	}{
		{"EFI/BOOT/BOOTX64.EFI", efiBin},
		{grub.ConfigPath, cfg},
		{bootstate.PrimaryPath, env},
		{bootstate.BackupPath, env},
	}
	for _, f := range files {
		if err := writeFile(fs, f.name, f.data); err != nil {
			return fmt.Errorf("image: ESP: %w", err)
		}
	}
	return nil
}

func writeData(d *disk.Disk, exts []layout.Extent, o Options) error {
	e, _ := layout.Find(exts, layout.Data)
	fs, err := dataformat.Create(d.Backend, e.Start, e.End-e.Start)
	if err != nil {
		return fmt.Errorf("image: data file system: %w", err)
	}
	if o.AdminPassword != "" {
		hash, err := users.HashPassword(o.AdminPassword)
		if err != nil {
			return fmt.Errorf("image: the admin password: %w", err)
		}
		b, err := json.Marshal(Preseed{AdminPasswordHash: hash})
		if err != nil {
			return err
		}
		if err := fs.Mkdir("keel"); err != nil {
			return fmt.Errorf("image: data: %w", err)
		}
		if err := writeFile(fs, PreseedFile, b); err != nil {
			return fmt.Errorf("image: data: %w", err)
		}
	}
	// Last: go-diskfs writes its own superblock with every change.
	if err := dataformat.Reserve(d.Backend, e.Start, dataformat.ReservedPercent); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	return nil
}

func writePartition(d *disk.Disk, exts []layout.Extent, name, path string) error {
	e, _ := layout.Find(exts, name)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > e.End-e.Start {
		return fmt.Errorf("image: %s is %d MiB, more than partition %s holds (%d MiB): raise its size", path, st.Size()>>20, name, (e.End-e.Start)>>20)
	}
	w, err := d.Backend.Writable()
	if err != nil {
		return err
	}
	if _, err := io.Copy(io.NewOffsetWriter(w, e.Start), f); err != nil {
		return fmt.Errorf("image: write %s: %w", name, err)
	}
	return nil
}

func writeFile(fs filesystem.FileSystem, name string, data []byte) error {
	f, err := fs.OpenFile(name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return f.Close()
}
