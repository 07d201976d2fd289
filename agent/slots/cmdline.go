// Package slots owns the base slots' boot state on the ESP: what GRUB booted
// and why, committing a trial boot after the health checks, marking a slot
// bad, and the sentence that tells the operator what happened.
package slots

import "strings"

// Boot is what GRUB said on the kernel command line about this boot.
type Boot struct {
	Slot     string // "a" or "b"
	Mode     string // "good", "trial" or "recovery"
	Tries    string // tries left after GRUB took this boot's try
	Recovery bool
	EnvFrom  string // "primary", "backup" or "none": which boot state copy GRUB used
}

// ParseCmdline reads the keel.* parameters GRUB passes.
func ParseCmdline(cmdline string) Boot {
	b := Boot{Slot: "a", Mode: "good", EnvFrom: "primary"}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "keel.slot":
			if v == "a" || v == "b" {
				b.Slot = v
			}
		case "keel.mode":
			b.Mode = v
		case "keel.tries":
			b.Tries = v
		case "keel.recovery":
			b.Recovery = v == "1"
		case "keel.bootenv":
			b.EnvFrom = v
		}
	}
	if b.Mode == "recovery" {
		b.Recovery = true
	}
	return b
}
