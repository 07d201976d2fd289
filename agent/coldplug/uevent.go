package coldplug

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// eventSource is a subscription to the kernel's device events.
type eventSource interface {
	// pending returns the devices of the add events queued now, without
	// waiting; overflow says some were lost.
	pending() (devices []device, overflow bool, err error)
	// wait waits for the next event and returns its device if it is an
	// add event with a modalias (the zero device otherwise); close makes
	// it return an error.
	wait() (dev device, overflow bool, err error)
	close()
}

// netlinkEvents reads the kernel's uevents (NETLINK_KOBJECT_UEVENT).
type netlinkEvents struct {
	fd  int
	f   *os.File
	buf []byte
}

func openNetlinkEvents() (*netlinkEvents, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// Group 1 carries the kernel's own events (udev re-broadcasts on 2).
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent bind: %w", err)
	}
	// A burst of events (a disk shelf, a USB hub, a whole boot's
	// coldplug) must not overflow the default buffer; FORCE works for
	// root beyond rmem_max.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	// Non-blocking fd in an *os.File: reads park in the runtime poller and
	// Close from another goroutine wakes them.
	return &netlinkEvents{fd: fd, f: os.NewFile(uintptr(fd), "uevent"), buf: make([]byte, 64<<10)}, nil
}

func (e *netlinkEvents) pending() ([]device, bool, error) {
	var out []device
	for {
		n, _, err := unix.Recvfrom(e.fd, e.buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return out, false, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.ENOBUFS):
			return out, true, nil
		case err != nil:
			return out, false, fmt.Errorf("uevent read: %w", err)
		}
		if d := addedDevice(e.buf[:n]); d.alias != "" {
			out = append(out, d)
		}
	}
}

func (e *netlinkEvents) wait() (device, bool, error) {
	n, err := e.f.Read(e.buf)
	if errors.Is(err, unix.ENOBUFS) {
		return device{}, true, nil
	}
	if err != nil {
		return device{}, false, fmt.Errorf("uevent read: %w", err)
	}
	return addedDevice(e.buf[:n]), false, nil
}

// addedDevice is the device of an add event, the zero device for other
// events.
func addedDevice(msg []byte) device {
	if action, d := parseUevent(msg); action == "add" {
		return d
	}
	return device{}
}

func (e *netlinkEvents) close() { e.f.Close() }

// Subscribe listens to the kernel's device events from now on, so that
// the next Coldplug walks sysfs once and then follows the events the
// drivers it loads cause (the devices they reveal), instead of walking
// sysfs again after every round; Watch then goes on reading the same
// subscription, without a walk of its own.
func (l *Loader) Subscribe() error {
	src, err := openNetlinkEvents()
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.sub
	l.sub = src
	l.mu.Unlock()
	if old != nil {
		old.close()
	}
	return nil
}

// subscription returns the subscription Coldplug follows, or nil.
func (l *Loader) subscription() eventSource {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sub
}

// takeSubscription hands the subscription over to Watch.
func (l *Loader) takeSubscription() eventSource {
	l.mu.Lock()
	defer l.mu.Unlock()
	src := l.sub
	l.sub = nil
	return src
}

// Watch loads modules for devices that appear after Coldplug — hot-plugged
// hardware, or devices a driver adds from a workqueue after its module init
// returned — by listening to the kernel's uevents, until ctx ends. It goes
// on with Subscribe's subscription; without one it subscribes and rescans
// sysfs once, so a device added between Coldplug and Watch is not missed.
func (l *Loader) Watch(ctx context.Context) error {
	src := l.takeSubscription()
	if src == nil {
		s, err := openNetlinkEvents()
		if err != nil {
			return err
		}
		src = s
		if _, err := l.Coldplug(ctx); err != nil {
			src.close()
			return err
		}
	}
	stop := context.AfterFunc(ctx, src.close)
	defer func() {
		if stop() {
			src.close()
		}
	}()
	for {
		d, overflow, err := src.wait()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if overflow {
			// Events were dropped: rescan to catch up.
			l.log.Warn("uevent overflow, rescanning sysfs")
			if _, err := l.Coldplug(ctx); err != nil {
				return err
			}
			continue
		}
		if d.alias != "" {
			l.handleDevice(ctx, d)
		}
	}
}

// parseUevent returns the ACTION, and the MODALIAS and DEVPATH as a
// device, of a kernel uevent:
// "add@/devices/…\0ACTION=add\0DEVPATH=…\0MODALIAS=pci:v…\0SEQNUM=…\0".
func parseUevent(msg []byte) (action string, dev device) {
	fields := bytes.Split(msg, []byte{0})
	if len(fields) == 0 || !bytes.Contains(fields[0], []byte("@")) {
		return "", device{} // not from the kernel (e.g. "libudev" header)
	}
	for _, f := range fields[1:] {
		switch {
		case bytes.HasPrefix(f, []byte("ACTION=")):
			action = string(f[len("ACTION="):])
		case bytes.HasPrefix(f, []byte("MODALIAS=")):
			dev.alias = string(f[len("MODALIAS="):])
		case bytes.HasPrefix(f, []byte("DEVPATH=")):
			dev.path = string(f[len("DEVPATH="):])
		}
	}
	return action, dev
}
