package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// SystemDirs are bound read-only into every root when they exist (a
// symbolic link, such as Debian's /bin, is copied as a link).
var systemDirs = []string{"/bin", "/sbin", "/bbin", "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/etc"}

// devices are the device nodes an application gets.
var devices = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty"}

// RootConfig is what an application's root holds besides the system.
type RootConfig struct {
	Dir     string // where to build it, e.g. /run/keel/sandbox/demo
	Slot    string // the application's slot, bound read-only at the same path
	Data    string // its data folder, bound read-write at the same path
	Exec    string // the agent binary, bound at ExecPath; "" for /proc/self/exe
	TmpSize string // size of its /tmp, e.g. "64m"; "" for 64m
}

// Root is a prepared root for an application.
type Root struct {
	Dir string
}

// PrepareRoot builds the root. It is a tmpfs of its own, private, so
// nothing mounted in it shows anywhere else.
func PrepareRoot(c RootConfig) (r *Root, err error) {
	if c.Exec == "" {
		c.Exec = "/proc/self/exe"
	}
	if c.TmpSize == "" {
		c.TmpSize = "64m"
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox root: %w", err)
	}
	r = &Root{Dir: c.Dir}
	if err := unix.Mount("keel-sandbox", c.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return nil, fmt.Errorf("sandbox root: mount tmpfs on %s: %w", c.Dir, err)
	}
	defer func() {
		if err != nil {
			r.Close()
			r = nil
		}
	}()
	if err := unix.Mount("", c.Dir, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return nil, fmt.Errorf("sandbox root: make %s private: %w", c.Dir, err)
	}
	for _, d := range systemDirs {
		fi, err := os.Lstat(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("sandbox root: %w", err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(d)
			if err != nil {
				return nil, fmt.Errorf("sandbox root: %w", err)
			}
			if err := os.Symlink(target, r.path(d)); err != nil {
				return nil, fmt.Errorf("sandbox root: %w", err)
			}
			continue
		}
		if err := r.bind(d, d, true); err != nil {
			return nil, err
		}
	}
	for _, d := range devices {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		if err := r.bind(d, d, false); err != nil {
			return nil, err
		}
	}
	if err := r.mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=invisible"); err != nil {
		return nil, err
	}
	if err := r.mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size="+c.TmpSize); err != nil {
		return nil, err
	}
	if err := r.bind(c.Slot, c.Slot, true); err != nil {
		return nil, err
	}
	if err := r.bind(c.Data, c.Data, false); err != nil {
		return nil, err
	}
	if err := r.bind(c.Exec, ExecPath, true); err != nil {
		return nil, err
	}
	// Nothing is created in the root itself from now on.
	if err := unix.Mount("", c.Dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return nil, fmt.Errorf("sandbox root: make %s read-only: %w", c.Dir, err)
	}
	return r, nil
}

func (r *Root) path(p string) string { return filepath.Join(r.Dir, p) }

// bind mounts src at dst inside the root, creating the mount point as a
// folder or a file like src.
func (r *Root) bind(src, dst string, readOnly bool) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("sandbox root: %w", err)
	}
	at := r.path(dst)
	if fi.IsDir() {
		err = os.MkdirAll(at, 0o755)
	} else {
		if err = os.MkdirAll(filepath.Dir(at), 0o755); err == nil {
			var f *os.File
			if f, err = os.OpenFile(at, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("sandbox root: %w", err)
	}
	if err := unix.Mount(src, at, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("sandbox root: bind %s: %w", src, err)
	}
	if readOnly {
		if err := unix.Mount("", at, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fmt.Errorf("sandbox root: make %s read-only: %w", src, err)
		}
	} else if err := unix.Mount("", at, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID, ""); err != nil && !strings.HasPrefix(src, "/dev/") {
		return fmt.Errorf("sandbox root: remount %s nosuid: %w", src, err)
	}
	return nil
}

func (r *Root) mount(src, dst, fstype string, flags uintptr, data string) error {
	at := r.path(dst)
	if err := os.MkdirAll(at, 0o755); err != nil {
		return fmt.Errorf("sandbox root: %w", err)
	}
	if err := unix.Mount(src, at, fstype, flags, data); err != nil {
		return fmt.Errorf("sandbox root: mount %s on %s: %w", fstype, dst, err)
	}
	return nil
}

// Close unmounts the root and everything in it and removes its folder.
func (r *Root) Close() error {
	if err := unix.Unmount(r.Dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("sandbox root: unmount %s: %w", r.Dir, err)
	}
	if err := os.Remove(r.Dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sandbox root: %w", err)
	}
	return nil
}
