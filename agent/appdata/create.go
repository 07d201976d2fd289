package appdata

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/image/dataformat"
)

// VolumeLabel is the ext4 volume name of an application's data volume.
const VolumeLabel = "keel-app"

// create makes the volume of name: an image of size bytes, formatted, with
// the folder's files copied in. Then, in this order, the folder's files
// move to .old, the image becomes the volume, and .old is removed; settle
// finishes what a power cut interrupted.
func (v *Volumes) create(name string, size int64) error {
	start := time.Now()
	dir := filepath.Join(v.Root, name)
	tmp := v.building(name)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := format(tmp, size); err != nil {
		os.Remove(tmp)
		return err
	}
	empty, err := isEmpty(dir)
	if err != nil {
		return err
	}
	if !empty {
		if err := v.copyIn(tmp, dir); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if !empty {
		if err := os.Rename(dir, v.moved(name)); err != nil {
			return err
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(v.Root); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, v.image(name)); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(v.volDir()); err != nil {
		return err
	}
	if !empty {
		if err := os.RemoveAll(v.moved(name)); err != nil {
			return err
		}
	}
	v.log().Info("application data volume made", "app", name, "size_mib", size>>20, "moved_in", !empty, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// settle finishes a volume's making that a power cut interrupted, or
// undoes it: the folder's files are never lost.
func (v *Volumes) settle(name string) error {
	dir := filepath.Join(v.Root, name)
	img, tmp, old := v.image(name), v.building(name), v.moved(name)
	hasImg, hasTmp, hasOld := exists(img), exists(tmp), exists(old)
	if hasOld && !hasImg {
		if hasTmp {
			// The files moved to .old only once .new held their copy.
			if err := os.Rename(tmp, img); err != nil {
				return err
			}
			if err := atomicfile.SyncDir(v.volDir()); err != nil {
				return err
			}
			hasImg = true
		} else {
			// Not a state create leaves; give the files back.
			if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("the folder's files are kept in %s: %w", old, err)
			}
			if err := os.Rename(old, dir); err != nil {
				return err
			}
			return atomicfile.SyncDir(v.Root)
		}
	}
	if hasOld && hasImg {
		v.log().Info("finishing the move of the application's files into its data volume", "app", name)
		return os.RemoveAll(old)
	}
	return nil
}

// copyIn mounts the image at the scratch folder and copies dir's tree
// into it, owners, modes and times kept.
func (v *Volumes) copyIn(img, dir string) error {
	mnt := v.scratch(filepath.Base(dir))
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return err
	}
	if err := v.mountImage(img, mnt); err != nil {
		return err
	}
	cerr := copyTree(dir, mnt)
	if err := v.ops().Unmount(mnt); err != nil {
		return errors.Join(cerr, err)
	}
	os.Remove(mnt)
	if cerr != nil {
		if errors.Is(cerr, syscall.ENOSPC) {
			return fmt.Errorf("the data folder holds more than the volume's %d MiB: give the application a larger data_mib in its app.json, or remove data from the folder: %w", fileSize(img)>>20, cerr)
		}
		return cerr
	}
	return nil
}

// format makes an empty volume of size bytes at path; the image is
// sparse, so only what the file system writes takes room.
func format(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	b, err := file.OpenFromPath(path, false)
	if err != nil {
		return err
	}
	defer b.Close()
	// No blocks reserved for root: the application is the volume's user.
	// The file was just made, empty: OnZeros skips writing zeros to it.
	if _, err := dataformat.CreateLabeled(dataformat.OnZeros(b), 0, size, VolumeLabel); err != nil {
		return fmt.Errorf("format: %w", err)
	}
	return nil
}

// copyTree copies src's content into dst, which exists: folders, regular
// files and symbolic links, with owners, modes and modification times.
// Devices, pipes and sockets have no place in an application's data and
// are left out.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		to := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.IsDir():
			if err := os.Mkdir(to, fi.Mode().Perm()); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, to); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			if err := copyFile(p, to, fi.Mode().Perm()); err != nil {
				return err
			}
		default:
			return nil
		}
		if st != nil {
			if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if err := os.Chmod(to, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
			return os.Chtimes(to, fi.ModTime(), fi.ModTime())
		}
		return nil
	})
}

func copyFile(from, to string, perm fs.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func syncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
