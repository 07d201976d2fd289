package datafs

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
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
