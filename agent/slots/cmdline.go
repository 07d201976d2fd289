// Package slots owns the base slots' boot state on the ESP: what GRUB booted
// and why, committing a trial boot after the health checks, marking a slot
// bad, and the sentence that tells the operator what happened.
package slots

import (
	"strings"

	"keel.dev/keel/image/layout"
)

// Boot is what GRUB said on the kernel command line about this boot.
type Boot struct {
	Slot     layout.Label
	Mode     Mode
	Tries    string // tries left after GRUB took this boot's try
	Recovery bool
	// Operator: the recovery console was chosen at GRUB's menu while a
	// slot was bootable, so someone is at the box.
	Operator bool
	EnvFrom  Copy // which boot state copy GRUB used
	// ESP is the partition GUID of the ESP GRUB was loaded from: it
	// names the boot disk ("" when GRUB did not say).
	ESP string
}

// Mode is how GRUB booted the slot.
type Mode string

// The modes GRUB passes as keel.mode.
const (
	ModeGood     Mode = "good"     // a committed slot
	ModeTrial    Mode = "trial"    // an uncommitted slot, one try taken
	ModeRecovery Mode = "recovery" // nothing bootable: the last good slot
)

// ParseCmdline reads the keel.* parameters GRUB passes.
func ParseCmdline(cmdline string) Boot {
	b := Boot{Slot: layout.SlotA, Mode: ModeGood, EnvFrom: Primary}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "keel.slot":
			if l, err := layout.ParseLabel(v); err == nil {
				b.Slot = l
			}
		case "keel.mode":
			b.Mode = Mode(v)
		case "keel.tries":
			b.Tries = v
		case "keel.recovery":
			b.Recovery = v == "1" || v == "operator"
			b.Operator = v == "operator"
		case "keel.bootenv":
			b.EnvFrom = Copy(v)
		case "keel.esp":
			b.ESP = v
		}
	}
	if b.Mode == ModeRecovery {
		b.Recovery = true
	}
	return b
}
