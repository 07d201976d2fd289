package apps

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/image/layout"
)

// squashfsMagic starts every squashfs.
const squashfsMagic = "hsqs"

// BlockMount is the box's Manager.Mount: it finds the slot's partition
// (app-a or app-b) by its GPT name and mounts it read-only as squashfs
// (nodev, nosuid). A partition that does not start with a squashfs
// superblock (an empty slot) is not mounted: the error wraps ErrEmptySlot.
func BlockMount(f blockdev.Finder) func(slot layout.Label, dir string) error {
	return func(slot layout.Label, dir string) error {
		name := layout.AppPart(slot)
		p, err := f.Find(name)
		if err != nil {
			return err
		}
		if err := checkMagic(p.Device); err != nil {
			return fmt.Errorf("partition %s (%s): %w", name, p.Device, err)
		}
		if err := unix.Mount(p.Device, dir, "squashfs", unix.MS_RDONLY|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
			return fmt.Errorf("mount partition %s (%s) at %s: %w", name, p.Device, dir, err)
		}
		return nil
	}
}

func checkMagic(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if string(b[:]) != squashfsMagic {
		return ErrEmptySlot
	}
	return nil
}

// UnmountDir is the box's Manager.Unmount. A file system still busy is
// detached, so it goes once its last user does; the partition stays in use
// until then, and an install into it is refused.
func UnmountDir(dir string) error {
	err := unix.Unmount(dir, 0)
	switch {
	case err == nil, errors.Is(err, unix.EINVAL): // EINVAL: not mounted
		return nil
	case errors.Is(err, unix.EBUSY):
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		return nil
	}
	return fmt.Errorf("unmount %s: %w", dir, err)
}
