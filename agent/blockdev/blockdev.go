// Package blockdev finds the keel partitions by their GPT names through
// sysfs, so the agent never depends on which disk bus or number it got.
package blockdev

import (
	"bufio"
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
}

// Default is the finder for the running system.
func Default() Finder { return Finder{SysClassBlock: "/sys/class/block", Dev: "/dev"} }

// Partition is a block device found by GPT name.
type Partition struct {
	Name   string // GPT partition name
	Device string // e.g. /dev/vda7
	Size   int64  // bytes
	Disk   string // parent disk, e.g. /dev/vda
}

// Find returns the partition whose GPT name is name. When several disks carry
// the layout (an installer's USB stick and the target disk), the first in
// sysfs order wins.
func (f Finder) Find(name string) (Partition, error) {
	ents, err := os.ReadDir(f.SysClassBlock)
	if err != nil {
		return Partition{}, fmt.Errorf("find partition %s: %w", name, err)
	}
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
		return p, nil
	}
	return Partition{}, fmt.Errorf("no partition named %q found: is the keel disk attached and its driver loaded?", name)
}

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
