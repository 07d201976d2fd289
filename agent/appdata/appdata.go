// Package appdata owns the applications' data volumes. An application's
// data folder (Root/<name>) is an ext4 file system of its own, kept in a
// sparse image file (Root/.volumes/<name>.ext4) and loop-mounted on the
// folder, so the application can fill its folder but never the data
// partition the agent saves its configuration, boot records and backups
// on. It is the quota the issue of hostile applications asks for: ext4's
// own project quotas need file-system features go-diskfs cannot create,
// and a box formatted before would never get them.
//
// A folder that holds data from before volumes existed is moved into its
// new volume once, in steps that a power cut at any moment leaves either
// undone or finished (see settle). The folder's files stay where they are
// until the volume holding their copy is in place.
package appdata

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/atomicfile"
)

// Volume is an application's mounted data volume.
type Volume struct {
	Dir   string // the data folder, Root/<name>, where the volume is mounted
	Image string // its image file
	Size  int64  // the volume's size in bytes: the most the application can store
	// Asked is the size the application's spec asks for now; it differs
	// from Size after an update asked for another size (a volume keeps
	// the size it was made with).
	Asked int64
}

// Usage is how full a volume is.
type Usage struct {
	Limit int64 `json:"limit_bytes"` // the volume's size
	Used  int64 `json:"used_bytes"`  // what its file system holds
	Asked int64 `json:"asked_bytes,omitempty"`
}

// Usage reads the volume's file system.
func (v *Volume) Usage() (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(v.Dir, &st); err != nil {
		return Usage{}, fmt.Errorf("data volume %s: %w", v.Dir, err)
	}
	u := Usage{Limit: v.Size, Used: int64(st.Blocks-st.Bfree) * st.Bsize}
	if v.Asked != v.Size {
		u.Asked = v.Asked
	}
	return u, nil
}

// Volumes opens and closes the applications' volumes. Fill in the fields
// before the first Open; they must not change afterwards.
type Volumes struct {
	Root string // the applications' data folders, e.g. /data/apps
	// Default is the size of a volume whose spec asks for none; Max is
	// the largest one made (a spec asking for more gets Max).
	Default, Max int64
	Log          *slog.Logger // nil: discard
	// Ops are the loop and mount operations; zero: the kernel's.
	Ops Ops

	mu   sync.Mutex
	open map[string]*Volume
}

// Ops are the operations that need the kernel's loop devices.
type Ops struct {
	// Attach gives a loop device for image, held until release and then
	// by its mount: unmounting it frees it.
	Attach  func(image string) (dev string, release func(), err error)
	Mount   func(dev, dir string) error
	Unmount func(dir string) error
}

func (v *Volumes) ops() Ops {
	o := v.Ops
	if o.Attach == nil {
		o.Attach = attach
	}
	if o.Mount == nil {
		o.Mount = mount
	}
	if o.Unmount == nil {
		o.Unmount = func(dir string) error { return unix.Unmount(dir, 0) }
	}
	return o
}

func (v *Volumes) log() *slog.Logger {
	if v.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return v.Log
}

// The names under Root/.volumes of the steps of making a volume.
func (v *Volumes) volDir() string           { return filepath.Join(v.Root, ".volumes") }
func (v *Volumes) image(name string) string { return filepath.Join(v.volDir(), name+".ext4") }
func (v *Volumes) building(name string) string {
	return filepath.Join(v.volDir(), name+".new") // a volume being made: not yet complete
}
func (v *Volumes) moved(name string) string {
	return filepath.Join(v.volDir(), name+".old") // the folder's files, once copied into .new
}
func (v *Volumes) scratch(name string) string {
	return filepath.Join(v.volDir(), name+".mnt") // where .new is mounted to copy into it
}

// Open mounts the application's volume on Root/<name>, making it (asked
// bytes, 0 for Default) and moving the folder's files into it the first
// time, and gives the folder to uid and gid. A volume already open is
// returned as it is.
func (v *Volumes) Open(name string, asked int64, uid, gid int) (*Volume, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	size := v.size(asked)
	if vol, ok := v.open[name]; ok {
		// A copy: the running version's status reads its own.
		c := *vol
		c.Asked = size
		return &c, nil
	}
	// The root stays open to the application's user, who reaches its
	// folder through it when it is not confined.
	if err := os.MkdirAll(v.Root, 0o755); err != nil {
		return nil, fmt.Errorf("application data volume: %w", err)
	}
	if err := os.MkdirAll(v.volDir(), 0o700); err != nil {
		return nil, fmt.Errorf("application data volume: %w", err)
	}
	dir := filepath.Join(v.Root, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("application data volume: %w", err)
	}
	if err := v.settle(name); err != nil {
		return nil, fmt.Errorf("application data volume of %s: %w", name, err)
	}
	img := v.image(name)
	if _, err := os.Stat(img); errors.Is(err, fs.ErrNotExist) {
		if err := v.create(name, size); err != nil {
			return nil, fmt.Errorf("make the data volume of %s: %w", name, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("application data volume: %w", err)
	}
	fi, err := os.Stat(img)
	if err != nil {
		return nil, fmt.Errorf("application data volume: %w", err)
	}
	if err := v.mountOn(img, dir); err != nil {
		return nil, fmt.Errorf("mount the data volume of %s: %w", name, err)
	}
	if err := own(dir, uid, gid); err != nil {
		v.ops().Unmount(dir)
		return nil, fmt.Errorf("application data volume: %w", err)
	}
	vol := &Volume{Dir: dir, Image: img, Size: fi.Size(), Asked: size}
	if vol.Size != size {
		v.log().Info("the application's data volume keeps the size it was made with", "app", name, "size_mib", vol.Size>>20, "asked_mib", size>>20)
	}
	if v.open == nil {
		v.open = map[string]*Volume{}
	}
	v.open[name] = vol
	return vol, nil
}

// Made says whether the application's volume exists (mounted or not).
func (v *Volumes) Made(name string) bool { return exists(v.image(name)) }

// size is the volume size for a spec's ask.
func (v *Volumes) size(asked int64) int64 {
	s := asked
	if s <= 0 {
		s = v.Default
	}
	if v.Max > 0 && s > v.Max {
		s = v.Max
	}
	return s &^ (1<<20 - 1) // whole MiB, as the file system's blocks want
}

// Close unmounts every open volume; the application must have stopped.
func (v *Volumes) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var errs []error
	for name, vol := range v.open {
		if err := v.ops().Unmount(vol.Dir); err != nil {
			errs = append(errs, fmt.Errorf("unmount the data volume of %s: %w", name, err))
			continue
		}
		delete(v.open, name)
	}
	return errors.Join(errs...)
}

// mountOn mounts image on dir. Files in dir itself, under the volume,
// were written while the volume was not mounted (by a base from before
// volumes, booted after this one): they are moved aside, never deleted,
// so the volume's files are what the application sees.
func (v *Volumes) mountOn(img, dir string) error {
	name := filepath.Base(dir)
	if empty, err := isEmpty(dir); err != nil {
		return err
	} else if !empty {
		aside := filepath.Join(v.volDir(), name+".unmounted-"+strconv.FormatInt(time.Now().Unix(), 10))
		if err := os.Rename(dir, aside); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(v.Root); err != nil {
			return err
		}
		v.log().Warn("files were written in the application's data folder while its volume was not mounted; they are kept aside", "app", name, "kept", aside)
	}
	return v.mountImage(img, dir)
}

func (v *Volumes) mountImage(img, dir string) error {
	dev, release, err := v.ops().Attach(img)
	if err != nil {
		return err
	}
	defer release()
	return v.ops().Mount(dev, dir)
}

// own gives the volume's root to the application's user, as the plain
// folder was.
func own(dir string, uid, gid int) error {
	if err := os.Lchown(dir, uid, gid); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

func isEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
}
