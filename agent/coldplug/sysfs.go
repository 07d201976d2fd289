package coldplug

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// attrDirs are the attribute groups sysfs puts in device directories, which
// never hold a device. Every device has a "power"; skipping them halves the
// directories a scan opens, and a scan costs 0.3-1 s of an emulated CPU.
var attrDirs = map[string]bool{
	"power": true, "msi_irqs": true, "holders": true, "slaves": true,
	"queue": true, "mq": true, "trace": true, "integrity": true,
	"statistics": true, "queues": true, "byte_queue_limits": true,
}

// scanModaliases returns the distinct modalias strings of the devices under
// dir (/sys/devices), in path order. Every device, whatever its bus or
// class, lives under /sys/devices; /sys/bus/*/devices only link there, and
// WalkDir does not follow links, so each device is read once.
func scanModaliases(dir string) ([]string, error) {
	var out []string
	seen := make(map[string]bool)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			// A device can vanish mid-walk (hot unplug, a driver
			// replacing it); that is not a reason to stop.
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() && attrDirs[d.Name()] && p != dir {
			return fs.SkipDir
		}
		if d.Name() != "modalias" || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil // unreadable attribute: nothing to match
		}
		a := strings.TrimSpace(string(b))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return out, err
}
