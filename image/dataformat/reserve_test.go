package dataformat

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"golang.org/x/sys/unix"
)

func newFS(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "data.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	b, err := file.OpenFromPath(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := Create(b, 0, size); err != nil {
		t.Fatal(err)
	}
	if err := Reserve(b, 0, ReservedPercent); err != nil {
		t.Fatal(err)
	}
	return img
}

// The file system keeps 5% for root, and e2fsck finds it clean.
func TestReservedBlocks(t *testing.T) {
	if _, err := exec.LookPath("dumpe2fs"); err != nil {
		t.Skip("e2fsprogs is not installed")
	}
	img := newFS(t, 64<<20)
	out, err := exec.Command("dumpe2fs", "-h", img).CombinedOutput()
	if err != nil {
		t.Fatalf("dumpe2fs: %v\n%s", err, out)
	}
	var total, reserved int
	for _, line := range strings.Split(string(out), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(k) {
		case "Block count":
			total = atoi(v)
		case "Reserved block count":
			reserved = atoi(v)
		}
	}
	if total == 0 || reserved != total*ReservedPercent/100 {
		t.Errorf("%d of %d blocks reserved, want %d%%", reserved, total, ReservedPercent)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range strings.TrimSpace(s) {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// An application that fills the disk stops at the reserve; the agent
// (root) still saves.
func TestAppCannotFillTheReserve(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a loop device and writes as another user")
	}
	img := newFS(t, 64<<20)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Skipf("no loop mount here: %v %s", err, out)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	// The application's user must reach its folder.
	for _, d := range []string{filepath.Dir(dir), dir} {
		os.Chmod(d, 0o755)
	}
	app := filepath.Join(dir, "apps")
	os.Mkdir(app, 0o700)
	os.Chown(app, 900, 900)
	fill := exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(app, "fill"), "bs=1M")
	fill.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 900, Gid: 900, Groups: []uint32{}}}
	out, err := fill.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "No space left") {
		t.Fatalf("the app's write did not stop at a full disk: %v %s", err, out)
	}
	// As the agent saves: write, then fsync, which is where delayed
	// allocation would report ENOSPC.
	f, err := os.OpenFile(filepath.Join(dir, "keel-config.json"), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatalf("the agent cannot save after the app filled the disk: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("the agent's save does not reach the disk after the app filled it: %v", err)
	}
}
