package diskimage

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"

	"keel.dev/keel/image/manifest"
)

// BaseSquashfs writes a base slot's squashfs to out: the kernel, the
// initramfs and manifest.json. Kernel and initramfs are compressed already,
// so data blocks are stored as they are; that is faster to build and boot.
func BaseSquashfs(out, kernel, initramfs string, m manifest.Base) error {
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeSquashfs(out, []sqFile{
		{name: manifest.KernelFile, path: kernel},
		{name: manifest.InitramfsFile, path: initramfs},
		{name: manifest.BaseFile, data: mj},
	})
}

type sqFile struct {
	name string
	path string // read from here, or
	data []byte // this content
}

func writeSquashfs(out string, files []sqFile) error {
	var total int64
	for _, f := range files {
		if f.path == "" {
			total += int64(len(f.data))
			continue
		}
		st, err := os.Stat(f.path)
		if err != nil {
			return fmt.Errorf("squashfs %s: %w", out, err)
		}
		total += st.Size()
	}
	os.Remove(out)
	// The workspace backend needs a size; squashfs only ever shrinks it.
	b, err := file.CreateFromPath(out, total+16<<20)
	if err != nil {
		return fmt.Errorf("squashfs %s: %w", out, err)
	}
	fs, err := squashfs.Create(b, 0, 0, 4096)
	if err != nil {
		b.Close()
		return fmt.Errorf("squashfs %s: %w", out, err)
	}
	// go-diskfs leaves its workspace (a copy of every file) behind.
	defer os.RemoveAll(fs.Workspace())
	for _, f := range files {
		w, err := fs.OpenFile(f.name, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("squashfs %s: add %s: %w", out, f.name, err)
		}
		if f.path != "" {
			src, err := os.Open(f.path)
			if err != nil {
				return fmt.Errorf("squashfs %s: %w", out, err)
			}
			_, err = io.Copy(w, src)
			src.Close()
			if err != nil {
				return fmt.Errorf("squashfs %s: add %s: %w", out, f.name, err)
			}
		} else if _, err := w.Write(f.data); err != nil {
			return fmt.Errorf("squashfs %s: add %s: %w", out, f.name, err)
		}
	}
	if err := fs.Finalize(squashfs.FinalizeOptions{NoCompressData: true, NoCompressFragments: true}); err != nil {
		return fmt.Errorf("squashfs %s: finalize: %w", out, err)
	}
	return b.Close()
}
