package reset

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSecureResetLeavesNothingAndResumes(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "data.img")
	marker := []byte("MARKER-keel-secret-1234")
	img := bytes.Repeat([]byte("x"), 8<<20)
	copy(img[3<<20:], marker)
	copy(img[len(img)-100:], marker)
	os.WriteFile(dev, img, 0o600)
	esp := filepath.Join(dir, "esp")
	os.MkdirAll(filepath.Join(esp, "recovery"), 0o700)
	os.WriteFile(filepath.Join(esp, "users.json"), marker, 0o600)
	os.WriteFile(filepath.Join(esp, "recovery", "tls.key"), marker, 0o600)
	zeroed := ""
	s := Store{Dir: esp, ZeroFree: func(d string) error { zeroed = d; return nil }}
	if err := s.Ask(Request{Mode: "wipe"}); err == nil {
		t.Fatal("an unknown mode was taken")
	}
	if err := s.Ask(Request{Mode: Secure, Then: PowerOff, Requested: time.Now()}); err != nil {
		t.Fatal(err)
	}
	r, err := s.Pending()
	if err != nil || r == nil || r.State != StateRequested {
		t.Fatalf("pending %+v %v", r, err)
	}
	// A power cut after the wipe began: the next boot sees Wiping and
	// does it all again.
	r.State = StateWiping
	s.save(*r)
	r, _ = s.Pending()
	rep, err := s.Run(r, Device{Path: dev, Size: int64(len(img))}, []string{filepath.Join(esp, "users.json"), filepath.Join(esp, "recovery")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Resumed || rep.Level != "Clear" || rep.Verified != verifyBlocks || len(rep.Removed) != 2 {
		t.Fatalf("report %+v", rep)
	}
	after, _ := os.ReadFile(dev)
	if bytes.Contains(after, marker) || bytes.Count(after, []byte{0}) != len(after) {
		t.Fatal("the marker survived the secure reset")
	}
	if p, _ := s.Pending(); p != nil {
		t.Fatal("the request stayed")
	}
	if got, err := s.LastReport(); err != nil || got == nil || got.Method != "overwrite with zeros" {
		t.Fatalf("report on the ESP: %+v %v", got, err)
	}
	if zeroed != esp {
		t.Fatalf("the ESP's free space was not cleared (%q)", zeroed)
	}
	for _, p := range []string{"users.json", "recovery"} {
		if _, err := os.Stat(filepath.Join(esp, p)); err == nil {
			t.Errorf("%s stayed on the ESP", p)
		}
	}
}

func TestQuickResetEmptiesTheFileSystemHead(t *testing.T) {
	dir := t.TempDir()
	dev := filepath.Join(dir, "data.img")
	os.WriteFile(dev, bytes.Repeat([]byte{0xff}, 4<<20), 0o600)
	s := Store{Dir: dir, ZeroFree: func(string) error { t.Fatal("a quick reset clears free space"); return nil }}
	s.Ask(Request{Mode: Quick})
	r, _ := s.Pending()
	if r.Then != Reboot {
		t.Fatalf("then %q", r.Then)
	}
	rep, err := s.Run(r, Device{Path: dev, Size: 4 << 20}, nil, nil)
	if err != nil || rep.Method != "new file system" {
		t.Fatal(rep, err)
	}
	after, _ := os.ReadFile(dev)
	if bytes.Count(after[:1<<20], []byte{0}) != 1<<20 {
		t.Fatal("the head is not zero")
	}
}

// zeroFree on a small file system of its own: what was deleted is gone.
func TestZeroFreeClearsDeletedData(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("tmpfs: %v", err)
	}
	defer unix.Unmount(dir, 0)
	if err := zeroFree(dir); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	unix.Statfs(dir, &st)
	if st.Bfree*uint64(st.Bsize) < 3<<20 {
		t.Fatal("the fill file stayed")
	}
}

// On a block device the device writes the zeros (BLKZEROOUT), and what
// was on it is gone from the file behind it.
func TestSecureResetOnABlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	dir := t.TempDir()
	back := filepath.Join(dir, "data.img")
	marker := []byte("MARKER-keel-loop-5678")
	img := bytes.Repeat([]byte("y"), 8<<20)
	copy(img[5<<20:], marker)
	os.WriteFile(back, img, 0o600)
	out, err := exec.Command("losetup", "--find", "--show", back).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	s := Store{Dir: filepath.Join(dir, "esp"), ZeroFree: func(string) error { return nil }}
	os.MkdirAll(s.Dir, 0o700)
	s.Ask(Request{Mode: Secure})
	r, _ := s.Pending()
	var seen []float64
	rep, err := s.Run(r, Device{Path: dev, Size: int64(len(img))}, nil, func(p float64) { seen = append(seen, p) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Method != "device write zeroes" || rep.Verified != verifyBlocks {
		t.Fatalf("report %+v", rep)
	}
	if len(seen) == 0 || seen[len(seen)-1] != 1 {
		t.Errorf("progress %v, want it to end at 1", seen)
	}
	after, _ := os.ReadFile(back)
	if bytes.Contains(after, marker) || bytes.Count(after, []byte{0}) != len(after) {
		t.Fatal("the marker survived on the loop device's file")
	}
}
