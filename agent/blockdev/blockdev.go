// Package blockdev finds the keel partitions by their GPT names through
// sysfs, so the agent never depends on which disk bus or number it got.
package blockdev

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Finder looks partitions up under a sysfs and /dev root (tests use a fake).
type Finder struct {
	SysClassBlock string // "/sys/class/block"
	Dev           string // "/dev"
	// Disk, when set, is the disk the box booted from (e.g. /dev/vda):
	// partitions are found on it alone, never on another disk that
	// carries the same GPT names (an installer stick, a disk moved in
	// from another appliance).
	Disk string
}

// Default is the finder for the running system, on any disk.
func Default() Finder { return Finder{SysClassBlock: "/sys/class/block", Dev: "/dev"} }

// Partition is a block device found by GPT name.
type Partition struct {
	Name   string // GPT partition name
	Device string // e.g. /dev/vda7
	Size   int64  // bytes
	Disk   string // parent disk, e.g. /dev/vda
}

// Find returns the partition whose GPT name is name, on the boot disk when
// the Finder knows it. Two partitions of that name where one is expected
// are refused: writing the wrong one could destroy another disk.
func (f Finder) Find(name string) (Partition, error) {
	ents, err := os.ReadDir(f.SysClassBlock)
	if err != nil {
		return Partition{}, fmt.Errorf("find partition %s: %w", name, err)
	}
	var found []Partition
	for _, e := range ents {
		uevent := filepath.Join(f.SysClassBlock, e.Name(), "uevent")
		vars, err := readUevent(uevent)
		if err != nil || vars["DEVTYPE"] != "partition" || vars["PARTNAME"] != name {
			continue
		}
		p := Partition{Name: name, Device: filepath.Join(f.Dev, vars["DEVNAME"])}
		if b, err := os.ReadFile(filepath.Join(f.SysClassBlock, e.Name(), "size")); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			p.Size = n * 512 // sysfs counts 512-byte sectors whatever the disk's
		}
		// The partition's sysfs folder sits inside its disk's folder.
		if real, err := filepath.EvalSymlinks(filepath.Join(f.SysClassBlock, e.Name())); err == nil {
			p.Disk = filepath.Join(f.Dev, filepath.Base(filepath.Dir(real)))
		}
		if f.Disk != "" && p.Disk != f.Disk {
			continue
		}
		found = append(found, p)
	}
	switch len(found) {
	case 0:
		where := "is the keel disk attached and its driver loaded?"
		if f.Disk != "" {
			where = "on the boot disk " + f.Disk + "; its partition table may be damaged"
		}
		return Partition{}, fmt.Errorf("no partition named %q found: %s", name, where)
	case 1:
		return found[0], nil
	}
	var devs []string
	for _, p := range found {
		devs = append(devs, p.Device)
	}
	return Partition{}, fmt.Errorf("%w: %d partitions are named %q (%s); the box uses none of them rather than risk the wrong disk: detach the disk that is not the appliance's, or rename its partitions",
		ErrDuplicate, len(found), name, strings.Join(devs, ", "))
}

// ErrDuplicate: more than one partition carries a name the box looks for.
var ErrDuplicate = errors.New("duplicate partition names")

// Wait polls for the partition until it appears or timeout passes; disks can
// show up a little after their driver loads.
func (f Finder) Wait(name string, timeout time.Duration) (Partition, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := f.Find(name)
		if err == nil || time.Now().After(deadline) {
			return p, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readUevent(path string) (map[string]string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	return vars, sc.Err()
}
