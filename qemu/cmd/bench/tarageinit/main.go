// Command tarageinit is the /init (PID 1) of the backup benchmark's
// baseline: booted directly by the kernel from a variant of keel's
// initramfs (go run ./initramfs -agent <this binary> -binary u-root's
// tar), it mounts the data partition and the demo app's data volume as the
// agent does, then times
//
//	tar -c <the app's data folder> | age -p > /data/tarage.age   (fsync)
//	age -d < /data/tarage.age | tar -x <a new folder>            (sync)
//
// with u-root's tar and filippo.io/age in process (the age command reads
// passphrases only from a terminal), at the backups' scrypt work factor,
// prints
//
//	TARAGE bytes=N archive=N backup=SECONDS restore=SECONDS
//
// or TARAGE error="...", and powers off. It never returns from main.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"filippo.io/age"
	"github.com/u-root/u-root/pkg/libinit"
	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/appdata"
	"keel.dev/keel/agent/backup"
	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/agent/coldplug"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/image/layout"
)

const (
	tar      = "/bin/tar"
	app      = "demo"
	password = "bench-backup-password"
)

func main() {
	// In a keel initramfs the init's binary is also /sbin/modprobe, a
	// link the init makes, as the agent does.
	coldplug.MaybeModprobe()
	libinit.SetEnv()
	libinit.CreateRootfs()
	if err := pid1.LinkModprobe(); err != nil {
		fmt.Println(err)
	}
	if err := run(); err != nil {
		fmt.Printf("TARAGE error=%q\n", err.Error())
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() error {
	ctx := context.Background()
	l, err := coldplug.New(coldplug.Options{})
	if err != nil {
		return err
	}
	if _, err := l.Coldplug(ctx); err != nil {
		return err
	}
	for _, m := range []string{"ext4", "loop"} {
		if err := l.Load(ctx, m); err != nil && !errors.Is(err, coldplug.ErrUnknown) {
			return fmt.Errorf("load %s: %w", m, err)
		}
	}
	p, err := blockdev.Default().Wait(layout.Data, 10*time.Second)
	if err != nil {
		return err
	}
	if err := os.MkdirAll("/data", 0o755); err != nil {
		return err
	}
	if err := unix.Mount(p.Device, "/data", "ext4", unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount %s: %w", p.Device, err)
	}
	vols := &appdata.Volumes{Root: "/data/apps", Default: 1 << 30, Max: 1 << 40}
	vol, err := vols.Open(app, 0, 0, 0)
	if err != nil {
		return err
	}
	var bytes int64
	filepath.WalkDir(vol.Dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				bytes += info.Size()
			}
		}
		return nil
	})

	archive := "/data/tarage.age"
	start := time.Now()
	if err := create(vol.Dir, archive); err != nil {
		return fmt.Errorf("tar | age: %w", err)
	}
	backupS := time.Since(start).Seconds()
	st, err := os.Stat(archive)
	if err != nil {
		return err
	}

	out := "/data/tarage-restored"
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	start = time.Now()
	if err := extract(archive, out); err != nil {
		return fmt.Errorf("age -d | tar -x: %w", err)
	}
	unix.Sync()
	restoreS := time.Since(start).Seconds()
	fmt.Printf("TARAGE bytes=%d archive=%d backup=%.3f restore=%.3f\n", bytes, st.Size(), backupS, restoreS)
	return nil
}

// create is tar -c dir | age -p > archive, then fsync.
func create(dir, archive string) error {
	rcp, err := age.NewScryptRecipient(password)
	if err != nil {
		return err
	}
	rcp.SetWorkFactor(backup.MinWorkFactor)
	f, err := os.Create(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(tar, "-c", "-f", "/proc/self/fd/1", ".")
	cmd.Dir, cmd.Stderr = dir, os.Stdout
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	w, err := age.Encrypt(f, rcp)
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	_, cerr := io.Copy(w, pipe)
	if err := cmd.Wait(); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Sync()
}

// extract is age -d < archive | tar -x dir.
func extract(archive, dir string) error {
	id, err := age.NewScryptIdentity(password)
	if err != nil {
		return err
	}
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := age.Decrypt(f, id)
	if err != nil {
		return err
	}
	cmd := exec.Command(tar, "-x", "-f", "/proc/self/fd/0", dir)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	pipe, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	_, cerr := io.Copy(pipe, r)
	pipe.Close()
	if err := cmd.Wait(); err != nil {
		return err
	}
	return cerr
}
