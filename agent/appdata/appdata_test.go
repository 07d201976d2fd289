package appdata

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"golang.org/x/sys/unix"

	"keel.dev/keel/image/dataformat"
)

const appUID, appGID = 900, 900

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: attaches loop devices and mounts")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices here: %v", err)
	}
}

// dataPartition makes and mounts a data file system like the box's (5%
// reserved for root) of size bytes, and returns its mount point.
func dataPartition(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "data.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	b, err := file.OpenFromPath(img, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dataformat.Create(b, 0, size); err != nil {
		t.Fatal(err)
	}
	if err := dataformat.Reserve(b, 0, dataformat.ReservedPercent); err != nil {
		t.Fatal(err)
	}
	b.Close()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	dev, release, err := attach(img)
	if err != nil {
		t.Fatal(err)
	}
	err = mount(dev, dir)
	release()
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func volumes(t *testing.T, root string) *Volumes {
	v := &Volumes{Root: root, Default: 32 << 20, Max: 64 << 20}
	t.Cleanup(func() { v.Close() })
	return v
}

// asApp runs a shell command as the application's user.
func asApp(dir, script string) ([]byte, error) {
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appGID}}
	return cmd.CombinedOutput()
}

func free(t *testing.T, dir string) (all, user int64) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bfree) * st.Bsize, int64(st.Bavail) * st.Bsize
}

// An application that fills its data folder stops at its volume's size;
// the data partition keeps its room and the agent still saves. Without the volume the same application takes the
// partition down to root's reserve.
func TestAppCannotFillPastItsVolume(t *testing.T) {
	needRoot(t)
	data := dataPartition(t, 160<<20)
	root := filepath.Join(data, "apps")
	_, before := free(t, data)

	v := volumes(t, root)
	vol, err := v.Open("demo", 0, appUID, appGID)
	if err != nil {
		t.Fatal(err)
	}
	if vol.Size != 32<<20 || vol.Dir != filepath.Join(root, "demo") {
		t.Fatalf("volume %+v, want 32 MiB at apps/demo", vol)
	}
	out, err := asApp(vol.Dir, "dd if=/dev/zero of=fill bs=1M count=200")
	if err == nil || !strings.Contains(string(out), "No space left") {
		t.Fatalf("the app filled 200 MiB into a 32 MiB volume: %v %s", err, out)
	}
	u, err := vol.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if u.Used > u.Limit || u.Limit != 32<<20 {
		t.Errorf("usage %+v, want at most the 32 MiB limit", u)
	}
	_, after := free(t, data)
	if took := before - after; took > 40<<20 {
		t.Errorf("the full volume took %d MiB of the data partition, want at most its 32 MiB and metadata", took>>20)
	}
	if err := os.WriteFile(filepath.Join(data, "agent-save"), make([]byte, 16<<20), 0o600); err != nil {
		t.Errorf("the agent could not save after the app filled its volume: %v", err)
	}

	// The same app with a plain folder: it takes all but the reserve.
	plain := filepath.Join(data, "plain")
	os.Mkdir(plain, 0o700)
	os.Chown(plain, appUID, appGID)
	asApp(plain, "dd if=/dev/zero of=fill bs=1M count=400")
	if _, user := free(t, data); user > 1<<20 {
		t.Errorf("without a volume the app left %d KiB for other users; the baseline shows nothing", user>>10)
	}
}

// A folder from before volumes moves into its volume: its files, owners,
// modes, links and times; nothing is left beside the volume; the data is
// there again after a close and an open.
func TestFolderMovesIntoItsVolume(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	dir := filepath.Join(root, "demo")
	os.MkdirAll(filepath.Join(dir, "db", "deep"), 0o750)
	os.WriteFile(filepath.Join(dir, "db", "deep", "rows"), []byte("kept"), 0o640)
	os.Symlink("db/deep/rows", filepath.Join(dir, "link"))
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	os.Chtimes(filepath.Join(dir, "db", "deep", "rows"), mtime, mtime)
	for _, p := range []string{dir, filepath.Join(dir, "db"), filepath.Join(dir, "db", "deep"), filepath.Join(dir, "db", "deep", "rows")} {
		os.Chown(p, appUID, appGID)
	}

	v := volumes(t, root)
	if _, err := v.Open("demo", 0, appUID, appGID); err != nil {
		t.Fatal(err)
	}
	if !mounted(t, dir) {
		t.Fatal("the folder is not a mount point")
	}
	checkMoved(t, dir, mtime)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if empty, _ := isEmpty(dir); !empty {
		t.Error("the folder under the volume still holds files after the move")
	}
	names := list(t, filepath.Join(root, ".volumes"))
	if names != "demo.ext4" {
		t.Errorf(".volumes holds %s, want only demo.ext4", names)
	}
	if _, err := v.Open("demo", 0, appUID, appGID); err != nil {
		t.Fatal(err)
	}
	checkMoved(t, dir, mtime)
}

func checkMoved(t *testing.T, dir string, mtime time.Time) {
	t.Helper()
	p := filepath.Join(dir, "db", "deep", "rows")
	b, err := os.ReadFile(filepath.Join(dir, "link"))
	if err != nil || string(b) != "kept" {
		t.Fatalf("through the link: %q %v", b, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || st.Uid != appUID || !fi.ModTime().Equal(mtime) {
		t.Errorf("rows: mode %v uid %d mtime %v", fi.Mode(), st.Uid, fi.ModTime())
	}
	fi, _ = os.Stat(filepath.Join(dir, "db"))
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("db: mode %v", fi.Mode())
	}
	fi, _ = os.Stat(dir)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != appUID || fi.Mode().Perm() != 0o700 {
		t.Errorf("the volume's root: uid %d mode %v, want the app's, 0700", st.Uid, fi.Mode())
	}
}

// A power cut at each step of the move leaves the files where the next
// start finds them.
func TestInterruptedMoveLosesNothing(t *testing.T) {
	needRoot(t)
	for _, c := range []struct {
		name  string
		state func(t *testing.T, root string) // from a folder holding "rows" = "kept"
	}{
		{"copy unfinished", func(t *testing.T, root string) {
			os.MkdirAll(filepath.Join(root, ".volumes"), 0o700)
			os.WriteFile(filepath.Join(root, ".volumes", "demo.new"), []byte("half an image"), 0o600)
		}},
		{"files moved aside, volume not yet in place", func(t *testing.T, root string) {
			makeVolume(t, root)
			vd := filepath.Join(root, ".volumes")
			os.Rename(filepath.Join(vd, "demo.ext4"), filepath.Join(vd, "demo.new"))
			os.Rename(filepath.Join(root, "demo"), filepath.Join(vd, "demo.old"))
		}},
		{"volume in place, moved files not yet removed", func(t *testing.T, root string) {
			makeVolume(t, root)
			vd := filepath.Join(root, ".volumes")
			os.MkdirAll(filepath.Join(vd, "demo.old"), 0o700)
			os.WriteFile(filepath.Join(vd, "demo.old", "rows"), []byte("kept"), 0o600)
		}},
		{"files moved aside and no volume", func(t *testing.T, root string) {
			vd := filepath.Join(root, ".volumes")
			os.MkdirAll(vd, 0o700)
			os.Rename(filepath.Join(root, "demo"), filepath.Join(vd, "demo.old"))
			os.Mkdir(filepath.Join(root, "demo"), 0o700)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "demo"), 0o700)
			os.WriteFile(filepath.Join(root, "demo", "rows"), []byte("kept"), 0o600)
			c.state(t, root)
			v := volumes(t, root)
			vol, err := v.Open("demo", 0, appUID, appGID)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(vol.Dir, "rows")); err != nil || string(b) != "kept" {
				t.Errorf("rows: %q %v", b, err)
			}
			if names := list(t, filepath.Join(root, ".volumes")); names != "demo.ext4" {
				t.Errorf(".volumes holds %s, want only demo.ext4", names)
			}
		})
	}
}

// makeVolume moves root/demo into its volume and closes it, leaving an
// empty folder and the image.
func makeVolume(t *testing.T, root string) {
	t.Helper()
	v := &Volumes{Root: root, Default: 32 << 20}
	if _, err := v.Open("demo", 0, appUID, appGID); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
}

// Files an older base wrote into the bare folder are kept aside, and the
// volume's files are what the application sees.
func TestFilesUnderTheVolumeAreKeptAside(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "demo"), 0o700)
	os.WriteFile(filepath.Join(root, "demo", "rows"), []byte("kept"), 0o600)
	makeVolume(t, root)
	os.WriteFile(filepath.Join(root, "demo", "rows"), []byte("written by an older base"), 0o600)

	v := volumes(t, root)
	vol, err := v.Open("demo", 0, appUID, appGID)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(vol.Dir, "rows")); string(b) != "kept" {
		t.Errorf("the app sees %q, want the volume's file", b)
	}
	m, _ := filepath.Glob(filepath.Join(root, ".volumes", "demo.unmounted-*", "rows"))
	if len(m) != 1 {
		t.Fatalf("the older base's file was not kept aside: %v", m)
	}
	if b, _ := os.ReadFile(m[0]); string(b) != "written by an older base" {
		t.Errorf("kept aside: %q", b)
	}
}

// A folder larger than the volume it would move into stays as it is, and
// the error says what to do.
func TestFolderTooLargeStaysAsItIs(t *testing.T) {
	needRoot(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "demo"), 0o700)
	if err := os.WriteFile(filepath.Join(root, "demo", "big"), make([]byte, 40<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	v := volumes(t, root)
	_, err := v.Open("demo", 16<<20, appUID, appGID)
	if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "data_mib") {
		t.Fatalf("open: %v, want a sentence naming data_mib", err)
	}
	if fi, err := os.Stat(filepath.Join(root, "demo", "big")); err != nil || fi.Size() != 40<<20 {
		t.Errorf("the folder's file: %v", err)
	}
	if names := list(t, filepath.Join(root, ".volumes")); names != "" {
		t.Errorf(".volumes holds %s after a refused move", names)
	}
	if mounted(t, filepath.Join(root, "demo")) {
		t.Error("the folder was mounted over")
	}
}

func list(t *testing.T, dir string) string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range es {
		n = append(n, e.Name())
	}
	return strings.Join(n, ",")
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}
