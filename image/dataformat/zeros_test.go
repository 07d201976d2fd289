package dataformat

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
)

// A file system made through OnZeros on a new sparse file reads byte for
// byte as one made without it, and takes less room on the disk.
func TestOnZerosMakesTheSameFileSystem(t *testing.T) {
	dir := t.TempDir()
	const size = 208 << 20
	format := func(name string, zeros bool) (string, int64) {
		p := filepath.Join(dir, name)
		b, err := file.CreateFromPath(p, size)
		if err != nil {
			t.Fatal(err)
		}
		s := b
		if zeros {
			s = OnZeros(b)
		}
		if _, err := CreateLabeled(s, 0, size, "vol"); err != nil {
			t.Fatal(err)
		}
		b.Close()
		var used int64
		if fi, err := os.Stat(p); err == nil {
			used = blocksUsed(fi)
		}
		return p, used
	}
	plain, plainUsed := format("plain.ext4", false)
	sparse, sparseUsed := format("sparse.ext4", true)
	a, _ := os.ReadFile(plain)
	b, _ := os.ReadFile(sparse)
	// The UUIDs and times differ between any two formats: compare the
	// layout by the blocks that are zero in one and not in the other.
	const blk = 4096
	differ := 0
	for off := 0; off < size; off += blk {
		za, zb := allZero(a[off:off+blk]), allZero(b[off:off+blk])
		if za != zb {
			differ++
		}
	}
	if differ != 0 {
		t.Errorf("%d blocks are zero in one file system and not in the other", differ)
	}
	if sparseUsed >= plainUsed/2 {
		t.Errorf("disk use: %d bytes through OnZeros, %d without; want far less", sparseUsed, plainUsed)
	}
	if out, err := exec.Command("e2fsck", "-fn", sparse).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
}

// A zero write over data written before is made; one over nothing is not.
func TestOnZerosKeepsOverwrites(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	b, err := file.CreateFromPath(p, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w, err := OnZeros(b).Writable()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteAt(bytes.Repeat([]byte{7}, 100), 1000)
	w.WriteAt(bytes.Repeat([]byte{7}, 100), 1100) // touching: one span
	w.WriteAt(make([]byte, 50), 1150)             // over data: made
	w.WriteAt(make([]byte, 4096), 8192)           // over nothing: skipped
	got := make([]byte, 300)
	b.ReadAt(got, 1000)
	want := append(append(bytes.Repeat([]byte{7}, 150), make([]byte, 50)...), make([]byte, 100)...)
	if !bytes.Equal(got, want) {
		t.Errorf("read back %v", got)
	}
}

func blocksUsed(fi os.FileInfo) int64 { return fi.Sys().(*syscall.Stat_t).Blocks * 512 }
