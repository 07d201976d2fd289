package datafs

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"

	"keel.dev/keel/image/dataformat"
)

func TestPrepare(t *testing.T) {
	mkdev := func(t *testing.T, fill func([]byte)) (string, []byte) {
		b := make([]byte, 2<<20)
		fill(b)
		p := filepath.Join(t.TempDir(), "dev")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p, b
	}
	ext := func(b []byte) { binary.LittleEndian.PutUint16(b[1024+0x38:], 0xEF53) }
	type calls struct{ mount, format int }
	ops := func(c *calls, mountErr error) Ops {
		return Ops{
			Mount:  func(dev, dir string) error { c.mount++; return mountErr },
			Format: func(dev string, size int64) error { c.format++; return nil },
		}
	}

	t.Run("ext4 mounts", func(t *testing.T) {
		dev, _ := mkdev(t, ext)
		var c calls
		out, err := Prepare(dev, 2<<20, "/x", ops(&c, nil))
		if err != nil || out != Mounted || c.format != 0 {
			t.Fatalf("out %v err %v calls %+v", out, err, c)
		}
	})
	t.Run("empty partition is formatted", func(t *testing.T) {
		dev, _ := mkdev(t, func([]byte) {})
		var c calls
		out, err := Prepare(dev, 2<<20, "/x", ops(&c, nil))
		if err != nil || out != Formatted || c.format != 1 || c.mount != 1 {
			t.Fatalf("out %v err %v calls %+v", out, err, c)
		}
	})
	t.Run("damaged ext4 is left alone", func(t *testing.T) {
		dev, before := mkdev(t, ext)
		var c calls
		_, err := Prepare(dev, 2<<20, "/x", ops(&c, errors.New("structure needs cleaning")))
		if !errors.Is(err, ErrUnusable) || c.format != 0 {
			t.Fatalf("err %v calls %+v", err, c)
		}
		after, _ := os.ReadFile(dev)
		if string(after) != string(before) {
			t.Error("partition content changed")
		}
	})
	t.Run("unknown content is left alone", func(t *testing.T) {
		dev, _ := mkdev(t, func(b []byte) { b[4096] = 0x42 })
		var c calls
		_, err := Prepare(dev, 2<<20, "/x", ops(&c, nil))
		if !errors.Is(err, ErrUnusable) || c.format != 0 || c.mount != 0 {
			t.Fatalf("err %v calls %+v", err, c)
		}
	})
}

// A data file system made by a build from before the reserve gets 5% for
// root at its next mount, once; e2fsck finds it clean. One that has a
// reserve keeps it.
func TestOldFileSystemGetsItsReserve(t *testing.T) {
	if _, err := exec.LookPath("dumpe2fs"); err != nil {
		t.Skip("e2fsprogs is not installed")
	}
	const size = 64 << 20
	mk := func(t *testing.T, percent int) string {
		p := filepath.Join(t.TempDir(), "data")
		b, err := file.CreateFromPath(p, size)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dataformat.Create(b, 0, size); err != nil {
			t.Fatal(err)
		}
		if percent > 0 {
			if err := dataformat.Reserve(b, 0, percent); err != nil {
				t.Fatal(err)
			}
		}
		b.Close()
		return p
	}
	reserved := func(t *testing.T, dev string) (reserved, total int) {
		out, err := exec.Command("dumpe2fs", "-h", dev).CombinedOutput()
		if err != nil {
			t.Fatalf("dumpe2fs: %v %s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			k, v, _ := strings.Cut(l, ":")
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			switch k {
			case "Reserved block count":
				reserved = n
			case "Block count":
				total = n
			}
		}
		return
	}
	ops := Linux()
	ops.Mount = func(dev, dir string) error { return nil }

	dev := mk(t, 0)
	if r, _ := reserved(t, dev); r != 0 {
		t.Fatalf("the old build's file system already reserves %d blocks", r)
	}
	out, err := Prepare(dev, size, "/x", ops)
	if err != nil || out != Reserved {
		t.Fatalf("first mount: %v %v, want Reserved", out, err)
	}
	if r, n := reserved(t, dev); r != n*dataformat.ReservedPercent/100 {
		t.Errorf("reserved %d of %d blocks, want %d%%", r, n, dataformat.ReservedPercent)
	}
	if out, err := exec.Command("e2fsck", "-fn", dev).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v %s", err, out)
	}
	if out, err := Prepare(dev, size, "/x", ops); err != nil || out != Mounted {
		t.Errorf("second mount: %v %v, want Mounted", out, err)
	}

	dev = mk(t, 2)
	before, n := reserved(t, dev)
	if out, err := Prepare(dev, size, "/x", ops); err != nil || out != Mounted {
		t.Errorf("a file system with a reserve: %v %v, want Mounted", out, err)
	}
	if r, _ := reserved(t, dev); r != before || r != n*2/100 {
		t.Errorf("a 2%% reserve became %d blocks", r)
	}
}
