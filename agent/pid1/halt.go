package pid1

import (
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sys/unix"
)

// Action is what the box does at the end of a shutdown.
type Action int

const (
	PowerOff Action = iota
	Reboot
)

func (a Action) String() string {
	if a == Reboot {
		return "reboot"
	}
	return "power off"
}

// Halt syncs, unmounts the given mount points (innermost first), and powers
// off or reboots. It never returns: if the kernel call fails, PID 1 waits
// forever rather than exiting, which would panic the kernel. con's queued
// messages are written out (for a few seconds at most) before the power
// goes.
func Halt(log *slog.Logger, con *Console, a Action, mounts []string) {
	unix.Sync()
	for i := len(mounts) - 1; i >= 0; i-- {
		m := mounts[i]
		if err := unmount(m); err != nil {
			log.Error("unmount failed; remounting read-only", "mount", m, "err", err)
			unix.Mount("", m, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
		} else {
			log.Info("unmounted", "mount", m)
		}
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if a == Reboot {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	fmt.Fprintf(con, "keel: %s\n", a)
	con.Flush(3 * time.Second)
	if err := unix.Reboot(cmd); err != nil {
		log.Error("reboot system call failed", "err", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

// unmount retries briefly: a file closed a moment ago can keep it busy.
func unmount(m string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = unix.Unmount(m, 0); err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}
