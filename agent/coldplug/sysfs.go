package coldplug

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// device is one device that asks for a driver: its modalias and its path
// under sysfs, as uevents name it (/devices/pci0000:00/0000:00:03.0).
type device struct {
	alias string
	path  string // "" when unknown
}

// scanDevices returns the devices sys (/sys) lists by bus and by class
// that have a modalias, in path order, as `udevadm trigger` enumerates
// them, and the processors (whose one modalias, naming the CPU features,
// is devices/system/cpu/modalias). Every device with a
// driver to load is on a bus (pci, acpi, platform, virtio, usb…) or in a
// class (input); each entry there is one link, so this opens one file per
// device. Walking
// /sys/devices instead read every attribute directory's listing: 0.3-0.4 s
// of an emulated CPU at every boot.
func scanDevices(sys string) ([]device, error) {
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
	var out []device
	seen := make(map[device]bool)
	for _, d := range dirs {
		// A device can vanish between the listing and the read (hot
		// unplug, a driver replacing it): nothing to match then.
		b, err := os.ReadFile(filepath.Join(d, "modalias"))
		if err != nil {
			continue
		}
		dev := device{alias: strings.TrimSpace(string(b)), path: devicePath(sys, d)}
		if dev.alias != "" && !seen[dev] {
			seen[dev] = true
			out = append(out, dev)
		}
	}
	return out, nil
}

// devicePath returns where the bus's or class's entry d leads, relative to
// sys and rooted ("/devices/…"), or "" if it cannot tell.
func devicePath(sys, d string) string {
	if t, err := os.Readlink(d); err == nil {
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(d), t)
		}
		d = t
	}
	rel, err := filepath.Rel(sys, filepath.Clean(d))
	if err != nil || strings.HasPrefix(rel, "..") {
		return ""
	}
	return "/" + filepath.ToSlash(rel)
}
