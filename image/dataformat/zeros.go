package dataformat

import (
	"sort"

	"github.com/diskfs/go-diskfs/backend"
)

// OnZeros wraps storage that reads as zeros wherever nothing was written
// yet (a file just created and extended, sparse): a format's writes of
// zeros there are skipped. go-diskfs writes every inode table and the
// journal out in full, 13 MiB of zeros for a 208 MiB application volume,
// which an emulated first boot spent a fifth of a second copying, writing
// and syncing; skipped, the file also stays sparse. A zero write over
// bytes written before with data is made, so the result reads the same.
// Never use it on a partition that held something, nor for an image that
// may be copied skipping its holes onto a used disk (bmaptool): the
// inode tables must read as zeros where they land, as the kernel does
// not initialise them (MountOptions).
func OnZeros(b backend.Storage) backend.Storage { return &onZeros{Storage: b} }

type onZeros struct {
	backend.Storage
	data []span // written with data, sorted by start, not overlapping
}

type span struct{ start, end int64 }

func (z *onZeros) Writable() (backend.WritableFile, error) {
	w, err := z.Storage.Writable()
	if err != nil {
		return nil, err
	}
	return &onZerosFile{WritableFile: w, z: z}, nil
}

type onZerosFile struct {
	backend.WritableFile
	z *onZeros
}

func (f *onZerosFile) WriteAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	if allZero(p) && !f.z.overlaps(off, end) {
		return len(p), nil
	}
	n, err := f.WritableFile.WriteAt(p, off)
	f.z.add(off, off+int64(n))
	return n, err
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// overlaps says whether [start, end) meets a span written with data.
func (z *onZeros) overlaps(start, end int64) bool {
	i := sort.Search(len(z.data), func(i int) bool { return z.data[i].end > start })
	return i < len(z.data) && z.data[i].start < end
}

// add records [start, end) as written, merging the spans it meets or
// touches.
func (z *onZeros) add(start, end int64) {
	if start >= end {
		return
	}
	i := sort.Search(len(z.data), func(i int) bool { return z.data[i].end >= start })
	j := i
	for j < len(z.data) && z.data[j].start <= end {
		start, end = min(start, z.data[j].start), max(end, z.data[j].end)
		j++
	}
	z.data = append(z.data[:i], append([]span{{start, end}}, z.data[j:]...)...)
}
