// Package watchdog arms the hardware watchdog during a trial boot: if the
// agent stops making progress before it commits the slot, the machine
// resets and GRUB counts the try, so a hang ends on the other slot.
package watchdog

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Watchdog is an armed /dev/watchdog.
type Watchdog struct {
	f *os.File
}

// Arm opens dev and sets its timeout. Until Disarm, Pet must be called more
// often than timeout.
func Arm(dev string, timeout time.Duration) (*Watchdog, error) {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("arm watchdog %s: %w", dev, err)
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.WDIOC_SETTIMEOUT, int(timeout.Seconds())); err != nil {
		f.Close()
		return nil, fmt.Errorf("set watchdog %s timeout: %w", dev, err)
	}
	return &Watchdog{f: f}, nil
}

// Pet restarts the countdown.
func (w *Watchdog) Pet() error {
	if w == nil {
		return nil
	}
	_, err := w.f.Write([]byte{0})
	return err
}

// Disarm stops the watchdog with the magic close ('V'), which drivers
// honour unless built with nowayout.
func (w *Watchdog) Disarm() error {
	if w == nil {
		return nil
	}
	if _, err := w.f.Write([]byte("V")); err != nil {
		w.f.Close()
		return fmt.Errorf("disarm watchdog: %w", err)
	}
	return w.f.Close()
}
