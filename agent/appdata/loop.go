package appdata

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"keel.dev/keel/image/dataformat"
)

// attach binds image to a free loop device. The device clears itself
// when the last user goes (LO_FLAGS_AUTOCLEAR): the mount holds it, so
// unmounting the volume frees it and nothing is left to detach.
func attach(image string) (string, func(), error) {
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return "", nil, fmt.Errorf("loop devices: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()
	// Another attach can take the free device between the question and
	// the configuration; ask again.
	for range 8 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return "", nil, fmt.Errorf("open %s: %w", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(f.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], image)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			lf.Close()
			continue
		}
		if err != nil {
			lf.Close()
			return "", nil, fmt.Errorf("attach %s to %s: %w", image, dev, err)
		}
		// Held open until the mount takes its own reference, or the
		// device would clear itself at once.
		return dev, func() { lf.Close() }, nil
	}
	return "", nil, errors.New("no free loop device")
}

// mount mounts a volume's loop device on dir.
func mount(dev, dir string) error {
	return unix.Mount(dev, dir, "ext4", unix.MS_NOATIME|unix.MS_NOSUID|unix.MS_NODEV, dataformat.MountOptions)
}
