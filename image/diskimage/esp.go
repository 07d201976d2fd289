package diskimage

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"

	diskfs "github.com/diskfs/go-diskfs"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/layout"
)

// ReadESPFile reads a file from the ESP of a raw image.
func ReadESPFile(img, name string) ([]byte, error) {
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", img, err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(espNumber())
	if err != nil {
		return nil, fmt.Errorf("%s: ESP: %w", img, err)
	}
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("%s: ESP: %s: %w", img, name, err)
	}
	defer f.Close()
	return io.ReadAll(f)
}

// WriteESPFile overwrites an existing file on the ESP of a raw image in
// place, keeping its clusters, as GRUB's save_env needs for the boot state.
func WriteESPFile(img, name string, data []byte) error {
	d, err := diskfs.Open(img)
	if err != nil {
		return fmt.Errorf("open %s: %w", img, err)
	}
	defer d.Close()
	fs, err := d.GetFilesystem(espNumber())
	if err != nil {
		return fmt.Errorf("%s: ESP: %w", img, err)
	}
	return writeFile(fs, name, data)
}

// ReadBootState reads both copies of the boot state from a raw image and
// picks one as GRUB does.
func ReadBootState(img string) (*bootstate.State, string, error) {
	p, err := ReadESPFile(img, bootstate.PrimaryPath)
	if err != nil {
		return nil, "", err
	}
	b, err := ReadESPFile(img, bootstate.BackupPath)
	if err != nil {
		return nil, "", err
	}
	return bootstate.Pick(p, b)
}

// WriteBootState writes both copies of the boot state into a raw image.
func WriteBootState(img string, st bootstate.State) error {
	env, err := st.Encode()
	if err != nil {
		return err
	}
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		if err := WriteESPFile(img, p, env); err != nil {
			return err
		}
	}
	return nil
}

func espNumber() int {
	for _, p := range layout.Parts(layout.DefaultSizes) {
		if p.Name == layout.ESP {
			return p.Number
		}
	}
	return 1
}

// PartitionOf locates a partition of a raw image built with the default
// layout sizes.
func PartitionOf(img, name string) (layout.Extent, error) {
	st, err := os.Stat(img)
	if err != nil {
		return layout.Extent{}, err
	}
	exts, err := layout.Extents(layout.DefaultSizes, st.Size())
	if err != nil {
		return layout.Extent{}, err
	}
	e, ok := layout.Find(exts, name)
	if !ok {
		return layout.Extent{}, fmt.Errorf("%s: no partition %s", img, name)
	}
	return e, nil
}

// ReadPartition returns the used part of a squashfs slot of a raw image:
// the squashfs superblock's bytes_used, rounded up to 4 KiB as the
// squashfs pads it.
func ReadPartition(img, name string) ([]byte, error) {
	e, err := PartitionOf(img, name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(img)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sb := make([]byte, 96)
	if _, err := f.ReadAt(sb, e.Start); err != nil {
		return nil, err
	}
	if string(sb[:4]) != "hsqs" {
		return nil, fmt.Errorf("%s: partition %s holds no squashfs", img, name)
	}
	used := int64(binary.LittleEndian.Uint64(sb[40:]))
	used = (used + 4095) / 4096 * 4096
	buf := make([]byte, used)
	_, err = f.ReadAt(buf, e.Start)
	return buf, err
}
