// Package powerbutton watches the ACPI power button (an input device made
// by the kernel's "button" driver) so a press shuts the box down cleanly.
package powerbutton

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	evKey    = 1
	keyPower = 116
	// struct input_event on 64-bit: timeval (16 bytes), type, code, value.
	eventSize = 24
)

// Find returns the /dev/input/event* devices whose name says power button.
func Find(sysInput, dev string) []string {
	var out []string
	matches, _ := filepath.Glob(filepath.Join(sysInput, "event*"))
	for _, m := range matches {
		name, err := os.ReadFile(filepath.Join(m, "device", "name"))
		if err != nil || !strings.Contains(strings.ToLower(string(name)), "power button") {
			continue
		}
		out = append(out, filepath.Join(dev, "input", filepath.Base(m)))
	}
	return out
}

// Watch blocks until a power key press is read from device, or ctx ends.
func Watch(ctx context.Context, device string, pressed func()) error {
	f, err := os.Open(device)
	if err != nil {
		return fmt.Errorf("power button %s: %w", device, err)
	}
	go func() { <-ctx.Done(); f.Close() }()
	buf := make([]byte, eventSize*16)
	for {
		n, err := f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("power button %s: %w", device, err)
		}
		for off := 0; off+eventSize <= n; off += eventSize {
			if IsPress(buf[off : off+eventSize]) {
				pressed()
			}
		}
	}
}

// IsPress reports whether one input_event is a power key going down.
func IsPress(ev []byte) bool {
	typ := binary.LittleEndian.Uint16(ev[16:])
	code := binary.LittleEndian.Uint16(ev[18:])
	val := int32(binary.LittleEndian.Uint32(ev[20:]))
	return typ == evKey && code == keyPower && val == 1
}
