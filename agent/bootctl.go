package main

import (
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/bootpath"
	"keel.dev/keel/agent/coldplug"
)

// efivarsDir is where the kernel's EFI variables are mounted, read-only,
// while the boot reads the firmware's boot option.
const efivarsDir = "/sys/firmware/efi/efivars"

// bootController returns the sysfs path of the controller the firmware
// booted from (bootpath), or "" when it cannot tell: then every storage
// driver loads at once, as it must for a disk that could be anywhere.
func (a *agent) bootController(l *coldplug.Loader) string {
	start := time.Now()
	if _, err := os.Stat(efivarsDir); err != nil {
		a.log.Info("boot controller unknown: not booted by UEFI")
		return ""
	}
	if err := l.Load(a.ctx, "efivarfs"); err != nil && !errors.Is(err, coldplug.ErrUnknown) {
		a.log.Warn("boot controller unknown", "err", err)
		return ""
	}
	// Read-only: nothing on the box writes the firmware's variables, and
	// a write that goes wrong can leave a machine that does not start.
	if err := unix.Mount("efivarfs", efivarsDir, "efivarfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		a.log.Warn("boot controller unknown: mount efivarfs", "err", err)
		return ""
	}
	p, err := bootpath.Read(efivarsDir)
	if err := unix.Unmount(efivarsDir, 0); err != nil {
		a.log.Warn("unmount efivarfs", "err", err)
	}
	if err != nil {
		a.log.Info("boot controller unknown", "err", err)
		return ""
	}
	dev, err := p.Resolve("/sys")
	if err != nil {
		a.log.Info("boot controller unknown", "option", p.Option, "path", p.Text, "err", err)
		return ""
	}
	a.log.Info("boot controller", "option", p.Option, "path", p.Text, "device", dev, "took", time.Since(start).Round(time.Millisecond))
	return dev
}
