// Package datafs owns the data partition: it mounts the ext4 file system,
// creates one only on a partition that holds nothing at all, and never
// touches a partition it cannot mount, so a damaged file system's content
// stays there for recovery.
package datafs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/diskfs/go-diskfs/backend/file"
	"golang.org/x/sys/unix"

	"keel.dev/keel/image/dataformat"
)

// Outcome says what Prepare did.
type Outcome int

const (
	Mounted   Outcome = iota // an existing file system was mounted
	Formatted                // the partition was empty; a new file system was made and mounted
	// Reserved: an existing file system that kept no blocks for root (a
	// build from before the reserve) got them and was mounted.
	Reserved
)

// ErrUnusable wraps every reason the partition was left untouched.
var ErrUnusable = errors.New("data partition unusable")

// Ops are the side effects, swappable in tests.
type Ops struct {
	Mount  func(dev, dir string) error
	Format func(dev string, size int64) error
	// Reserve gives an unmounted file system root's reserve when it has
	// none, and says whether it wrote; nil: never.
	Reserve func(dev string) (bool, error)
}

// Linux are the real operations.
func Linux() Ops {
	return Ops{
		Mount: func(dev, dir string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			return unix.Mount(dev, dir, "ext4", unix.MS_NOATIME, dataformat.MountOptions)
		},
		Format: format,
		Reserve: func(dev string) (bool, error) {
			b, err := file.OpenFromPath(dev, false)
			if err != nil {
				return false, err
			}
			defer b.Close()
			set, err := dataformat.EnsureReserve(b, 0, dataformat.ReservedPercent)
			if set && err == nil {
				var f *os.File
				if f, err = b.Sys(); err == nil {
					err = f.Sync()
				}
			}
			return set, err
		},
	}
}

// probeSize is how much of the partition's start is read to decide whether
// it is empty: room for any file system's superblock or a partition table.
const probeSize = 1 << 20

// Prepare mounts the data partition at dir, formatting it only when its
// first MiB is all zeros. Any other state is an error wrapping ErrUnusable
// whose text tells the operator what happened and that nothing was changed.
func Prepare(dev string, size int64, dir string, ops Ops) (Outcome, error) {
	head, err := readHead(dev)
	if err != nil {
		return 0, fmt.Errorf("%w: read %s: %v", ErrUnusable, dev, err)
	}
	switch {
	case isExt(head):
		// A reserve that cannot be written leaves the box as it was
		// before reserves: no reason not to mount.
		out := Mounted
		if ops.Reserve != nil {
			if set, err := ops.Reserve(dev); set && err == nil {
				out = Reserved
			}
		}
		if err := ops.Mount(dev, dir); err != nil {
			return 0, fmt.Errorf("%w: the ext4 file system on %s cannot be mounted (%v); it was left untouched: restore a backup or run a factory reset from the console", ErrUnusable, dev, err)
		}
		return out, nil
	case isZero(head):
		if err := ops.Format(dev, size); err != nil {
			return 0, fmt.Errorf("%w: create a file system on the empty partition %s: %v", ErrUnusable, dev, err)
		}
		if err := ops.Mount(dev, dir); err != nil {
			return 0, fmt.Errorf("%w: mount the new file system on %s: %v", ErrUnusable, dev, err)
		}
		return Formatted, nil
	default:
		return 0, fmt.Errorf("%w: %s holds data that is not an ext4 file system; it was left untouched: restore a backup or run a factory reset from the console", ErrUnusable, dev)
	}
}

func readHead(dev string) ([]byte, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, probeSize)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, err
	}
	return buf[:n], nil
}

// isExt checks the ext2/3/4 superblock magic (offset 1024 + 0x38).
func isExt(head []byte) bool {
	const off = 1024 + 0x38
	return len(head) >= off+2 && binary.LittleEndian.Uint16(head[off:]) == 0xEF53
}

func isZero(head []byte) bool { return len(head) > 0 && bytes.Count(head, []byte{0}) == len(head) }

// format makes the same ext4 file system the image builder makes.
func format(dev string, size int64) error {
	b, err := file.OpenFromPath(dev, false)
	if err != nil {
		return err
	}
	defer b.Close()
	if _, err := dataformat.Create(b, 0, size); err != nil {
		return err
	}
	if err := dataformat.Reserve(b, 0, dataformat.ReservedPercent); err != nil {
		return err
	}
	unix.Sync()
	return nil
}
