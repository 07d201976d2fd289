package coldplug

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// scanModaliases returns the distinct modalias strings of the devices sys
// (/sys) lists by bus and by class, in path order, as `udevadm trigger`
// enumerates them, and the processors' (whose one modalias, naming the
// CPU features, is devices/system/cpu/modalias). Every device with a
// driver to load is on a bus (pci, acpi, platform, virtio, usb…) or in a
// class (input); each entry there is one link, so this opens one file per
// device. Walking
// /sys/devices instead read every attribute directory's listing: 0.3-0.4 s
// of an emulated CPU at every boot.
func scanModaliases(sys string) ([]string, error) {
	dirs := []string{filepath.Join(sys, "devices", "system", "cpu")}
	for _, pattern := range []string{"bus/*/devices/*", "class/*/*"} {
		m, err := filepath.Glob(filepath.Join(sys, pattern))
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, m...)
	}
	if _, err := os.Stat(sys); errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var out []string
	seen := make(map[string]bool)
	for _, d := range dirs {
		// A device can vanish between the listing and the read (hot
		// unplug, a driver replacing it): nothing to match then.
		b, err := os.ReadFile(filepath.Join(d, "modalias"))
		if err != nil {
			continue
		}
		a := strings.TrimSpace(string(b))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}
