package install

import (
	"fmt"
	"io"
	"os"

	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/image/layout"
)

// BlockDevices is the production OpenSlot: it finds a base slot's
// partition by its GPT name and opens the device for reading and writing.
func BlockDevices(f blockdev.Finder) func(slot layout.Label) (Device, int64, error) {
	return func(slot layout.Label) (Device, int64, error) {
		return openPartition(f, layout.BasePart(slot), os.O_RDWR)
	}
}

// AppBlockDevices is the production OpenAppSlot: it opens an application
// slot's partition (app-a, app-b) exclusively, so a slot that is still
// mounted is refused (EBUSY) rather than written under its file system.
// Close it before mounting the slot.
func AppBlockDevices(f blockdev.Finder) func(slot layout.Label) (Device, int64, error) {
	return func(slot layout.Label) (Device, int64, error) {
		return openPartition(f, layout.AppPart(slot), os.O_RDWR|os.O_EXCL)
	}
}

func openPartition(f blockdev.Finder, name string, flag int) (Device, int64, error) {
	p, err := f.Find(name)
	if err != nil {
		return nil, 0, err
	}
	fh, err := os.OpenFile(p.Device, flag, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open partition %s: %w", name, err)
	}
	size := p.Size
	if size <= 0 {
		// sysfs had no size; the device itself knows.
		if size, err = fh.Seek(0, io.SeekEnd); err != nil {
			fh.Close()
			return nil, 0, fmt.Errorf("size of partition %s (%s): %w", name, p.Device, err)
		}
	}
	return fh, size, nil
}
