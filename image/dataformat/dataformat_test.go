package dataformat

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
)

// Every size gets inode tables of whole blocks (the kernel's lazy inode
// table init refuses anything else and makes the file system read-only),
// and e2fsck finds the result clean.
func TestInodeTablesAreWholeBlocks(t *testing.T) {
	for _, size := range []int64{8 << 20, 208 << 20, 300 << 20, 1000 << 20, 3903 << 20, 4 << 30} {
		p := filepath.Join(t.TempDir(), "fs.img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size)
		f.Close()
		b, err := file.OpenFromPath(p, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := CreateLabeled(b, 0, size, "test"); err != nil {
			t.Fatalf("%d MiB: %v", size>>20, err)
		}
		b.Close()
		sb := make([]byte, 1024)
		f, _ = os.Open(p)
		f.ReadAt(sb, 1024)
		f.Close()
		blockSize := uint32(1024) << binary.LittleEndian.Uint32(sb[0x18:])
		perGroup := binary.LittleEndian.Uint32(sb[0x28:])
		inodeSize := uint32(binary.LittleEndian.Uint16(sb[0x58:]))
		if perGroup%(blockSize/inodeSize) != 0 {
			t.Errorf("%d MiB: %d inodes per group do not fill %d-byte blocks of %d-byte inodes", size>>20, perGroup, blockSize, inodeSize)
		}
		if _, err := exec.LookPath("e2fsck"); err == nil {
			if out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput(); err != nil {
				t.Errorf("%d MiB: e2fsck: %v\n%s", size>>20, err, out)
			}
		}
		os.Remove(p)
	}
}
