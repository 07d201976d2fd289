package diskimage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"
	"github.com/u-root/mkuimage/cpio"

	"keel.dev/keel/image/initrd"
	"keel.dev/keel/image/manifest"
)

// BaseSquashfs writes a base slot's squashfs to out: the kernel, the
// initramfs, manifest.json, and the programs of the initramfs's tools
// folder (manifest.ToolsDir), which it moves out of the initramfs into the
// slot, leaving empty files the agent mounts the slot's on: the kernel
// unpacks 7 MB less at every boot. Kernel and initramfs are compressed
// already, so data blocks are stored as they are; that is faster to build
// and boot.
func BaseSquashfs(out, kernel, initramfs string, m manifest.Base) error {
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "keel-base")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	boot, tools, err := splitTools(initramfs, filepath.Join(tmp, manifest.InitramfsFile))
	if err != nil {
		return fmt.Errorf("squashfs %s: %w", out, err)
	}
	files := []sqFile{
		{name: manifest.KernelFile, path: kernel},
		{name: manifest.InitramfsFile, path: boot},
		{name: manifest.BaseFile, data: mj},
	}
	return writeSquashfs(out, append(files, tools...))
}

// splitTools writes the initramfs to out with each regular file under
// manifest.ToolsDir emptied, and returns it with those files' contents.
// The links to them stay in the initramfs (go-diskfs cannot write links
// into a squashfs), and so do the emptied files, as mount points. An
// initramfs that has no tools, or is not in keel's archive format, is
// returned as it is.
func splitTools(initramfs, out string) (string, []sqFile, error) {
	f, err := os.Open(initramfs)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	head := make([]byte, 4)
	if _, err := io.ReadFull(f, head); err != nil || !initrd.IsLZ4(head) {
		return initramfs, nil, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", nil, err
	}
	recs, err := initrd.ReadRecords(f)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", initramfs, err)
	}
	var tools []sqFile
	for i, r := range recs {
		if !strings.HasPrefix(r.Name, manifest.ToolsDir+"/") || r.Mode&cpio.S_IFMT != cpio.S_IFREG || r.FileSize == 0 {
			continue
		}
		data, err := io.ReadAll(io.NewSectionReader(r, 0, int64(r.FileSize)))
		if err != nil {
			return "", nil, fmt.Errorf("%s: %s: %w", initramfs, r.Name, err)
		}
		mode := os.FileMode(r.Mode & 0o777)
		tools = append(tools, sqFile{name: r.Name, data: data, mode: mode})
		recs[i] = cpio.StaticFile(r.Name, "", uint64(mode))
	}
	if len(tools) == 0 {
		return initramfs, nil, nil
	}
	o, err := os.Create(out)
	if err != nil {
		return "", nil, err
	}
	defer o.Close()
	w, err := initrd.NewWriter(o)
	if err != nil {
		return "", nil, err
	}
	if err := cpio.WriteRecords(w, recs); err != nil {
		return "", nil, fmt.Errorf("%s: %w", out, err)
	}
	if err := w.Close(); err != nil {
		return "", nil, fmt.Errorf("%s: %w", out, err)
	}
	return out, tools, o.Close()
}

// sqFile is a file of a squashfs to write.
type sqFile struct {
	name string
	path string // read from here, or
	data []byte // this content
	mode os.FileMode
}

// slotBlockSize is the data block size of a base slot's squashfs.
const slotBlockSize = 128 << 10

func writeSquashfs(out string, files []sqFile) error {
	var total int64
	for _, f := range files {
		if f.path == "" {
			total += int64(len(f.data)) + 4096
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
	// 128 KiB blocks (squashfs's default): GRUB and the kernel read a file
	// in fewer, larger pieces, and each file's inode (a size per block)
	// stays small. At 4 KiB blocks go-diskfs v1.9.4 wrote, for some file
	// sizes, inodes that unsquashfs and GRUB could not read.
	fs, err := squashfs.Create(b, 0, 0, slotBlockSize)
	if err != nil {
		b.Close()
		return fmt.Errorf("squashfs %s: %w", out, err)
	}
	// go-diskfs leaves its workspace (a copy of every file) behind.
	defer os.RemoveAll(fs.Workspace())
	for _, f := range files {
		if err := addFile(fs, f); err != nil {
			return fmt.Errorf("squashfs %s: add %s: %w", out, f.name, err)
		}
	}
	// The workspace's root is a private temp folder; the slot's root must
	// be open to the applications' users, which run the tools.
	if err := fs.Chmod(".", 0o755); err != nil {
		return fmt.Errorf("squashfs %s: %w", out, err)
	}
	root := uint32(0)
	if err := fs.Finalize(squashfs.FinalizeOptions{NoCompressData: true, NoCompressFragments: true, FileUID: &root, FileGID: &root}); err != nil {
		return fmt.Errorf("squashfs %s: finalize: %w", out, err)
	}
	return b.Close()
}

func addFile(fs *squashfs.FileSystem, f sqFile) error {
	if dir := path.Dir(f.name); dir != "." {
		if err := fs.Mkdir(dir); err != nil {
			return err
		}
	}
	w, err := fs.OpenFile(f.name, os.O_CREATE|os.O_RDWR)
	if err != nil {
		return err
	}
	var src io.Reader = bytes.NewReader(f.data)
	if f.path != "" {
		in, err := os.Open(f.path)
		if err != nil {
			return err
		}
		defer in.Close()
		src = in
	}
	if _, err := io.Copy(w, src); err != nil {
		w.Close()
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	mode := f.mode
	if mode == 0 {
		mode = 0o644
	}
	return fs.Chmod(f.name, mode)
}
