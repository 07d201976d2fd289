package slots

import (
	"fmt"

	"keel.dev/keel/image/bootstate"
)

// Describe is the sentence the operator reads about how this boot came
// about, from GRUB's account of the boot and the state GRUB started from.
// st may be nil when the boot state could not be read.
func Describe(b Boot, st *bootstate.State, version string) string {
	if st == nil || b.EnvFrom == NoCopy {
		return fmt.Sprintf("Both copies of the boot state were unreadable; GRUB booted slot %s (%s) in recovery mode. Check the slots and commit one from the console.", b.Slot, version)
	}
	copyNote := ""
	if b.EnvFrom == Backup {
		copyNote = " The primary copy of the boot state was damaged; it was repaired from the backup copy."
	}
	if b.Operator {
		return fmt.Sprintf("The recovery console was chosen at the GRUB menu; slot %s (%s) runs in recovery mode (nothing is committed; reboot to leave it).%s", b.Slot, version, copyNote)
	}
	if b.Recovery {
		return fmt.Sprintf("No base slot was bootable; GRUB booted the last good slot %s (%s) in recovery mode.%s", b.Slot, version, copyNote)
	}
	if b.Slot != st.Default {
		d := st.Slot(st.Default)
		if d.Bootable && !d.Good && d.Tries == 0 {
			return fmt.Sprintf("The trial boot of %s in slot %s did not come up healthy in any of its tries (a kernel panic, a hang or a reset before the commit); the box is back on %s in slot %s.%s", d.Version, st.Default, version, b.Slot, copyNote)
		}
		return fmt.Sprintf("Slot %s (%s) is marked bad and was not booted; the box is on %s in slot %s.%s", st.Default, d.Version, version, b.Slot, copyNote)
	}
	if b.Mode == ModeTrial {
		return fmt.Sprintf("Trial boot of %s in slot %s (%s tries left).%s", version, b.Slot, b.Tries, copyNote)
	}
	return fmt.Sprintf("Booted committed slot %s (%s).%s", b.Slot, version, copyNote)
}
