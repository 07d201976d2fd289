package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CgroupRoot is where the agent mounts the cgroup v2 hierarchy.
const CgroupRoot = "/sys/fs/cgroup"

// Limits bound what an application's cgroup may use; a zero field is
// left at the kernel's default (no limit).
type Limits struct {
	Pids      int   // pids.max
	MemoryMax int64 // memory.max, bytes
	CPUWeight int   // cpu.weight, 1..10000 (the kernel's default is 100)
}

// Cgroup is an application's cgroup v2.
type Cgroup struct {
	Dir string
	// Missing names the limits whose controller the kernel did not
	// offer; they are not enforced.
	Missing []string
}

// MountCgroup2 makes CgroupRoot the cgroup v2 hierarchy: u-root's init
// mounts the v1 controllers there, which would keep them out of v2.
// Nothing runs in a v1 group this early, so they are unmounted first.
func MountCgroup2(root string) error {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return nil // already v2
	}
	if mounts, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var under []string
		for _, line := range strings.Split(string(mounts), "\n") {
			f := strings.Fields(line)
			if len(f) > 2 && strings.HasPrefix(f[1], root+"/") {
				under = append(under, f[1])
			}
		}
		for i := len(under) - 1; i >= 0; i-- {
			unix.Unmount(under[i], unix.MNT_DETACH)
		}
	}
	unix.Unmount(root, unix.MNT_DETACH)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("cgroup2: %w", err)
	}
	if err := unix.Mount("cgroup2", root, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "nsdelegate"); err != nil {
		return fmt.Errorf("cgroup2: mount on %s: %w", root, err)
	}
	return nil
}

// NewCgroup makes (or empties and reuses) the cgroup parent/name, enabling
// the controllers the limits need on the way, and sets the limits.
func NewCgroup(root, parent, name string, l Limits) (*Cgroup, error) {
	want := []string{"pids", "memory", "cpu"}
	dir := root
	for _, part := range []string{parent, name} {
		available, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		var enable []string
		for _, c := range want {
			if slices.Contains(strings.Fields(string(available)), c) {
				enable = append(enable, "+"+c)
			}
		}
		if len(enable) > 0 {
			if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0); err != nil {
				return nil, fmt.Errorf("cgroup %s: enable %s: %w", dir, strings.Join(enable, " "), err)
			}
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("cgroup: %w", err)
		}
	}
	cg := &Cgroup{Dir: dir}
	if err := cg.Kill(5 * time.Second); err != nil {
		return nil, err
	}
	set := func(file, value string) error {
		p := filepath.Join(dir, file)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			cg.Missing = append(cg.Missing, file)
			return nil
		}
		if err := os.WriteFile(p, []byte(value), 0); err != nil {
			return fmt.Errorf("cgroup %s: %s=%s: %w", dir, file, value, err)
		}
		return nil
	}
	if l.Pids > 0 {
		if err := set("pids.max", strconv.Itoa(l.Pids)); err != nil {
			return nil, err
		}
	}
	if l.MemoryMax > 0 {
		if err := set("memory.max", strconv.FormatInt(l.MemoryMax, 10)); err != nil {
			return nil, err
		}
		// No swap on an appliance, but where there is, it is no way out.
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0)
		}
	}
	if l.CPUWeight > 0 {
		if err := set("cpu.weight", strconv.Itoa(l.CPUWeight)); err != nil {
			return nil, err
		}
	}
	return cg, nil
}

// FD opens the cgroup for exec's CgroupFD (clone3 CLONE_INTO_CGROUP): the
// child starts in it, with no moment outside.
func (c *Cgroup) FD() (*os.File, error) {
	f, err := os.OpenFile(c.Dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	return f, nil
}

// Procs lists the processes in the cgroup.
func (c *Cgroup) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(c.Dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids, nil
}

// Kill kills every process in the cgroup, those that left the process
// group or the session too, and waits until it is empty.
func (c *Cgroup) Kill(timeout time.Duration) error {
	pids, err := c.Procs()
	if err != nil || len(pids) == 0 {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		// Kernels before 5.14 have no cgroup.kill: kill them one by one
		// until none is left (a fork racing it is caught next round).
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		pids, err := c.Procs()
		if err != nil || len(pids) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: %d processes still there after %v", c.Dir, len(pids), timeout)
		}
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Remove kills what is left and removes the cgroup.
func (c *Cgroup) Remove() error {
	if err := c.Kill(5 * time.Second); err != nil {
		return err
	}
	if err := os.Remove(c.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cgroup: %w", err)
	}
	return nil
}
