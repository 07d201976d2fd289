package diskimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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

// ReadPartition returns the used part of a squashfs slot of a raw image
// (see SquashfsUsed).
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
	used, err := SquashfsUsed(f, e.Start)
	if err != nil {
		return nil, fmt.Errorf("%s: partition %s: %w", img, name, err)
	}
	if used > e.End-e.Start {
		return nil, fmt.Errorf("%s: partition %s: its squashfs says it uses %d bytes, more than the partition's %d", img, name, used, e.End-e.Start)
	}
	buf := make([]byte, used)
	_, err = f.ReadAt(buf, e.Start)
	return buf, err
}

// SquashfsUsed returns how many bytes the squashfs at offset off of r
// occupies: its superblock's bytes_used, rounded up to 4 KiB as squashfs
// pads it.
func SquashfsUsed(r io.ReaderAt, off int64) (int64, error) {
	var sb [48]byte
	if _, err := r.ReadAt(sb[:], off); err != nil {
		return 0, fmt.Errorf("read the squashfs superblock: %w", err)
	}
	if string(sb[:4]) != "hsqs" {
		return 0, errors.New("no squashfs superblock")
	}
	used := binary.LittleEndian.Uint64(sb[40:])
	if used == 0 || used > math.MaxInt64-4095 {
		return 0, fmt.Errorf("the squashfs superblock says %d bytes are used", used)
	}
	return (int64(used) + 4095) / 4096 * 4096, nil
}
