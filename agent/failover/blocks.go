package failover

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// blockSize is the unit a sync compares and moves application data in:
// a change of a few bytes moves 8 KiB (a database's pages are 4 to 16
// KiB), and a changed file's list of hashes is 1/512 of it. Unchanged
// files cost a line of the manifest each (their Sum), whatever their size.
const blockSize = 8 << 10

// hashLen is the bytes of SHA-256 kept per block.
const hashLen = 16

// syncDir is the folder inside the application's data folder that a sync
// stages into and keeps snapshots in; it is never synced itself.
const syncDir = ".keel-sync"

// entry is one file, folder or symbolic link of the application's data,
// as a sync's manifest lists it.
type entry struct {
	Path   string `json:"p"` // slash-separated, relative to the data folder
	Kind   string `json:"k"` // "f", "d" or "l"
	Mode   uint32 `json:"m"` // permission bits
	UID    int    `json:"u"`
	GID    int    `json:"g"`
	Size   int64  `json:"s,omitempty"`
	MTime  int64  `json:"t"` // Unix nanoseconds
	Link   string `json:"l,omitempty"`
	Hashes []byte `json:"h,omitempty"` // hashLen bytes a block
	// Sum stands for Hashes in the manifest: the hash of the block
	// hashes; the block hashes of a file whose Sum differs are asked for
	// (sync/hashes).
	Sum []byte `json:"x,omitempty"`
}

// sum is the hash of e's block hashes.
func (e entry) sum() []byte {
	if e.Sum != nil {
		return e.Sum
	}
	return blockHash(e.Hashes)
}

// summary is e with its Sum for its Hashes, as the manifest carries it.
func (e entry) summary() entry {
	if e.Kind == "f" {
		e.Sum, e.Hashes = blockHash(e.Hashes), nil
	}
	return e
}

func (e entry) blocks() int { return len(e.Hashes) / hashLen }

func (e entry) hash(i int) []byte { return e.Hashes[i*hashLen : (i+1)*hashLen] }

// sameMeta reports whether e and o agree on everything but content.
func (e entry) sameMeta(o entry) bool {
	return e.Kind == o.Kind && e.Mode == o.Mode && e.UID == o.UID && e.GID == o.GID && (e.Kind == "d" || e.MTime == o.MTime)
}

// hashCache keeps each file's block hashes while its size, times and
// inode stay the same, so a sync hashes only what changed since the last.
type hashCache struct {
	mu    sync.Mutex
	files map[string]cached
}

type cached struct {
	size, mtime, ctime int64
	ino                uint64
	hashes             []byte
}

// manifest walks dir (skipping syncDir) and lists what it holds, sorted
// by path.
func (c *hashCache) manifest(dir string) ([]entry, error) {
	var out []entry
	seen := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if rel == syncDir || rel == "lost+found" {
			return filepath.SkipDir
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		st, _ := fi.Sys().(*syscall.Stat_t)
		e := entry{Path: rel, Mode: uint32(fi.Mode() & modeBits), MTime: fi.ModTime().UnixNano()}
		if st != nil {
			e.UID, e.GID = int(st.Uid), int(st.Gid)
		}
		switch {
		case fi.IsDir():
			e.Kind = "d"
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Kind = "l"
			if e.Link, err = os.Readlink(p); err != nil {
				return nil
			}
		case fi.Mode().IsRegular():
			e.Kind, e.Size = "f", fi.Size()
			h, err := c.hashes(p, fi, st)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			e.Hashes = h
			seen[p] = true
		default:
			return nil // devices, sockets, pipes: not data
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the application's data: %w", err)
	}
	c.mu.Lock()
	for p := range c.files {
		if !seen[p] && isUnder(p, dir) {
			delete(c.files, p)
		}
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func isUnder(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
}

func (c *hashCache) hashes(p string, fi fs.FileInfo, st *syscall.Stat_t) ([]byte, error) {
	var key cached
	key.size, key.mtime = fi.Size(), fi.ModTime().UnixNano()
	if st != nil {
		key.ctime, key.ino = st.Ctim.Nano(), st.Ino
	}
	c.mu.Lock()
	if c.files == nil {
		c.files = map[string]cached{}
	}
	old, ok := c.files[p]
	c.mu.Unlock()
	if ok && old.size == key.size && old.mtime == key.mtime && old.ctime == key.ctime && old.ino == key.ino {
		return old.hashes, nil
	}
	h, err := hashFile(p)
	if err != nil {
		return nil, err
	}
	key.hashes = h
	c.mu.Lock()
	c.files[p] = key
	c.mu.Unlock()
	return h, nil
}

// remember records hashes the sync just wrote, so the next sync does not
// read the file again.
func (c *hashCache) remember(p string, h []byte) {
	fi, err := os.Lstat(p)
	if err != nil {
		return
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	k := cached{size: fi.Size(), mtime: fi.ModTime().UnixNano(), hashes: h}
	if st != nil {
		k.ctime, k.ino = st.Ctim.Nano(), st.Ino
	}
	c.mu.Lock()
	if c.files == nil {
		c.files = map[string]cached{}
	}
	c.files[p] = k
	c.mu.Unlock()
}

func hashFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, blockSize)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			out = append(out, blockHash(buf[:n])...)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func blockHash(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:hashLen]
}

func statOf(fi fs.FileInfo) *syscall.Stat_t {
	st, _ := fi.Sys().(*syscall.Stat_t)
	return st
}
