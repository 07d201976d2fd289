package coldplug

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Watch loads modules for devices that appear after Coldplug — hot-plugged
// hardware, or devices a driver adds from a workqueue after its module init
// returned — by listening to the kernel's uevents, until ctx ends. It
// rescans sysfs once after subscribing, so a device added between Coldplug
// and Watch is not missed.
func (l *Loader) Watch(ctx context.Context) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return fmt.Errorf("uevent socket: %w", err)
	}
	// Group 1 carries the kernel's own events (udev re-broadcasts on 2).
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("uevent bind: %w", err)
	}
	// A burst of events (a disk shelf, a USB hub) must not overflow the
	// default buffer; FORCE works for root beyond rmem_max.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	// Non-blocking fd in an *os.File: reads park in the runtime poller and
	// Close from another goroutine wakes them.
	f := os.NewFile(uintptr(fd), "uevent")
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer func() {
		if stop() {
			f.Close()
		}
	}()

	if _, err := l.Coldplug(ctx); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, unix.ENOBUFS) {
				// Events were dropped: rescan to catch up.
				l.log.Warn("uevent overflow, rescanning sysfs")
				if _, err := l.Coldplug(ctx); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("uevent read: %w", err)
		}
		action, modalias := parseUevent(buf[:n])
		if action != "add" || modalias == "" {
			continue
		}
		l.handleModalias(ctx, modalias)
	}
}

// parseUevent returns the ACTION and MODALIAS of a kernel uevent:
// "add@/devices/…\0ACTION=add\0DEVPATH=…\0MODALIAS=pci:v…\0SEQNUM=…\0".
func parseUevent(msg []byte) (action, modalias string) {
	fields := bytes.Split(msg, []byte{0})
	if len(fields) == 0 || !bytes.Contains(fields[0], []byte("@")) {
		return "", "" // not from the kernel (e.g. "libudev" header)
	}
	for _, f := range fields[1:] {
		switch {
		case bytes.HasPrefix(f, []byte("ACTION=")):
			action = string(f[len("ACTION="):])
		case bytes.HasPrefix(f, []byte("MODALIAS=")):
			modalias = string(f[len("MODALIAS="):])
		}
	}
	return action, modalias
}
