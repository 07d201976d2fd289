package failover

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// loc is where a block with some hash already is on this box.
type loc struct {
	path string
	off  int64
}

// stageApp compares the primary's application data with this box's and
// stages what differs, into the journal j:
//   - a file this box has at the same path is patched in place: only its
//     changed blocks are staged (in one blob), from a copy this box has
//     of the block anywhere, else fetched; the patch is applied after the
//     commit, and again after a power cut;
//   - a file this box has whole under another name that goes is moved;
//   - any other file is staged whole and renamed into place.
//
// After a lost split brain (j.Snapshot) nothing is patched or moved: every
// file is staged whole, so what it replaces can be kept.
func (s *Service) stageApp(st State, call func(string, any) (*peerAnswer, error), j *journal, rep *SyncReport, say func(float64, string)) error {
	dir, err := s.appData()
	if err != nil {
		return fmt.Errorf("this appliance's application data folder: %w", err)
	}
	if dir == "" {
		return fmt.Errorf("the primary has application data, but this appliance has no application installed")
	}
	a, err := call("sync/manifest", syncAsk{Role: st.Role, Epoch: st.Epoch})
	if err != nil {
		return err
	}
	var m syncManifest
	a.count(&rep.Bytes)
	if err := a.decode(&m); err != nil {
		return err
	}
	if m.Role != RolePrimary || m.Epoch < st.Epoch {
		return fmt.Errorf("the peer is %s with epoch %d: a sync flows only from the primary", m.Role, m.Epoch)
	}
	if m.BlockSize != blockSize {
		return fmt.Errorf("the primary cuts data into blocks of %d bytes, this appliance %d: are both on the same version?", m.BlockSize, blockSize)
	}
	local, err := s.hashes.manifest(dir)
	if err != nil {
		return err
	}
	remote := map[string]bool{}
	for _, r := range m.Entries {
		if _, ok := inside(dir, r.Path); !ok {
			return fmt.Errorf("the primary's manifest names %q, outside the data folder", r.Path)
		}
		remote[r.Path] = true
	}
	localSum := map[string]entry{}
	for _, l := range local {
		localSum[l.Path] = l
	}
	// The block hashes of the files that differ: only theirs cross.
	var ask []string
	for _, r := range m.Entries {
		if r.Kind != "f" || r.Size == 0 {
			continue
		}
		if l, ok := localSum[r.Path]; ok && l.Kind == "f" && l.Size == r.Size && bytes.Equal(l.sum(), r.Sum) {
			continue
		}
		ask = append(ask, r.Path)
	}
	changedMeanwhile := map[string]bool{}
	if len(ask) > 0 {
		a, err := call("sync/hashes", ask)
		if err != nil {
			return err
		}
		var hs []fileHashes
		a.count(&rep.Bytes)
		if err := a.decode(&hs); err != nil {
			return err
		}
		got := map[string]fileHashes{}
		for _, h := range hs {
			got[h.Path] = h
		}
		for i := range m.Entries {
			r := &m.Entries[i]
			if r.Kind != "f" || r.Size == 0 {
				continue
			}
			h, ok := got[r.Path]
			if !ok {
				continue // the same as this box's
			}
			if h.Size != r.Size || !bytes.Equal(blockHash(h.Hashes), r.Sum) || len(h.Hashes) != int((r.Size+blockSize-1)/blockSize)*hashLen {
				changedMeanwhile[r.Path] = true
				continue
			}
			r.Hashes = h.Hashes
		}
	}
	byPath := map[string]entry{}
	index := map[string]loc{}
	// gone are files that go, by content: a new file with the same
	// content is one of them moved.
	gone := map[string][]string{}
	for _, e := range local {
		byPath[e.Path] = e
		if e.Kind == "f" {
			for i := 0; i < e.blocks(); i++ {
				index[string(e.hash(i))] = loc{e.Path, int64(i) * blockSize}
			}
			if !remote[e.Path] && e.Size > 0 {
				k := contentKey(e)
				gone[k] = append(gone[k], e.Path)
			}
		}
	}
	j.AppDir = dir
	stage := appStage(dir)
	os.RemoveAll(stage)
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return err
	}
	blob, err := os.OpenFile(filepath.Join(stage, blobName), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer blob.Close()
	var blobEnd int64
	// slot is where a fetched block goes: a whole staged file, or the
	// blob at a patch's offset.
	type slot struct {
		f  *os.File
		at int64
	}
	type pending struct {
		e     entry
		slots map[int]slot
		drop  bool // the file changed on the primary while read
	}
	var whole []*os.File
	defer func() {
		for _, f := range whole {
			f.Close()
		}
	}()
	files := map[string]*pending{}
	var want []blockWant
	dropped := 0
	moved := map[string]bool{}
	for _, r := range m.Entries {
		l, have := byPath[r.Path]
		if have && l.Kind != r.Kind {
			j.Remove = append(j.Remove, r.Path)
			have = false
		}
		switch r.Kind {
		case "d":
			// Every folder is listed: its time is set again after its
			// files change.
			j.Dirs = append(j.Dirs, r)
			if !have {
				j.newDirs++
			}
			continue
		case "l":
			if !have || l.Link != r.Link {
				j.Links = append(j.Links, r)
			} else if !l.sameMeta(r) {
				j.Meta = append(j.Meta, r)
			}
			continue
		}
		if have && l.Size == r.Size && bytes.Equal(l.sum(), r.sum()) {
			if !l.sameMeta(r) {
				j.Meta = append(j.Meta, r)
			}
			continue
		}
		if changedMeanwhile[r.Path] {
			// Changed on the primary since its manifest: this box keeps
			// its version until the next sync.
			dropped++
			continue
		}
		if !have && j.Snapshot == "" && r.Size > 0 {
			if from := gone[contentKey(r)]; len(from) > 0 {
				gone[contentKey(r)] = from[1:]
				moved[from[0]] = true
				j.Moves = append(j.Moves, move{From: from[0], Entry: r})
				continue
			}
		}
		p := &pending{e: r, slots: map[int]slot{}}
		files[r.Path] = p
		var fetch []int
		if have && j.Snapshot == "" {
			pt := patch{Entry: r}
			for i := 0; i < r.blocks(); i++ {
				if i < l.blocks() && bytes.Equal(l.hash(i), r.hash(i)) {
					continue
				}
				n := blockLen(r.Size, i)
				pt.Blocks = append(pt.Blocks, patchBlock{I: i, At: blobEnd, N: n})
				if at, ok := index[string(r.hash(i))]; !ok || copyBlock(blob, blobEnd, filepath.Join(dir, filepath.FromSlash(at.path)), at.off, n, r.hash(i)) != nil {
					fetch = append(fetch, i)
					p.slots[i] = slot{f: blob, at: blobEnd}
				}
				blobEnd += int64(n)
			}
			j.Patches = append(j.Patches, pt)
		} else {
			name := strconv.Itoa(len(whole))
			f, err := os.OpenFile(filepath.Join(stage, name), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
			if err != nil {
				return err
			}
			whole = append(whole, f)
			if err := f.Truncate(r.Size); err != nil {
				return fmt.Errorf("stage %s: %w%s", r.Path, err, freeSpace(dir))
			}
			for i := 0; i < r.blocks(); i++ {
				if at, ok := index[string(r.hash(i))]; ok && copyBlock(f, int64(i)*blockSize, filepath.Join(dir, filepath.FromSlash(at.path)), at.off, blockLen(r.Size, i), r.hash(i)) == nil {
					continue
				}
				fetch = append(fetch, i)
				p.slots[i] = slot{f: f, at: int64(i) * blockSize}
			}
			j.Files = append(j.Files, staged{Name: name, Entry: r})
		}
		if len(fetch) > 0 {
			want = append(want, blockWant{Path: r.Path, Blocks: fetch})
		}
	}
	for _, l := range local {
		if !remote[l.Path] && !moved[l.Path] && !underRemoved(l.Path, j.Remove) {
			j.Remove = append(j.Remove, l.Path)
		}
	}
	sort.Slice(j.Remove, func(a, b int) bool { return strings.Count(j.Remove[a], "/") > strings.Count(j.Remove[b], "/") })

	// Fetch the missing blocks in one stream, checking each against the
	// manifest: a file the application changed since gives another hash
	// and keeps this box's version until the next sync.
	if len(want) > 0 {
		total := 0
		for _, w := range want {
			total += len(w.Blocks)
		}
		say(0.2, fmt.Sprintf("fetching %d blocks of %d KiB from %s", total, blockSize>>10, st.Peer.Serial))
		a, err := call("sync/blocks", want)
		if err != nil {
			return err
		}
		if a.Code != 200 {
			return a.decode(nil)
		}
		defer a.Body.Close()
		body := bufio.NewReaderSize(counter{a.Body, &rep.Bytes}, 256<<10)
		buf := make([]byte, blockSize)
		done := 0
		for _, w := range want {
			p := files[w.Path]
			for _, i := range w.Blocks {
				var hdr [4]byte
				if _, err := io.ReadFull(body, hdr[:]); err != nil {
					return fmt.Errorf("the primary's blocks stopped: %w", err)
				}
				n := int(binary.BigEndian.Uint32(hdr[:]))
				if n > blockSize {
					return fmt.Errorf("the primary sent a block of %d bytes", n)
				}
				if _, err := io.ReadFull(body, buf[:n]); err != nil {
					return fmt.Errorf("the primary's blocks stopped: %w", err)
				}
				rep.DataBytes += int64(n)
				done++
				if done%256 == 0 {
					say(0.2+0.7*float64(done)/float64(total), fmt.Sprintf("fetched %d of %d blocks", done, total))
				}
				if n != blockLen(p.e.Size, i) || !bytes.Equal(blockHash(buf[:n]), p.e.hash(i)) {
					p.drop = true
					continue
				}
				sl := p.slots[i]
				if _, err := sl.f.WriteAt(buf[:n], sl.at); err != nil {
					return fmt.Errorf("stage %s: %w%s", w.Path, err, freeSpace(dir))
				}
			}
		}
	}
	keep := func(path string) bool {
		if p := files[path]; p != nil && p.drop {
			dropped++
			return false
		}
		return true
	}
	j.Files = slices.DeleteFunc(j.Files, func(f staged) bool { return !keep(f.Entry.Path) })
	j.Patches = slices.DeleteFunc(j.Patches, func(p patch) bool { return !keep(p.Entry.Path) })
	for _, f := range whole {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("stage: %w%s", err, freeSpace(dir))
		}
	}
	for _, f := range j.Files {
		setMeta(filepath.Join(stage, f.Name), f.Entry)
	}
	if err := blob.Sync(); err != nil {
		return fmt.Errorf("stage: %w%s", err, freeSpace(dir))
	}
	if dropped > 0 {
		rep.Result = fmt.Sprintf("%d files changed on the primary while they were read; the next sync takes them", dropped)
		s.log().Info("files changed on the primary during the sync", "count", dropped)
	}
	return syncTree(dir)
}

// contentKey identifies a file by its size and block hashes.
func contentKey(e entry) string { return strconv.FormatInt(e.Size, 10) + ":" + string(e.sum()) }

func underRemoved(p string, removed []string) bool {
	for _, r := range removed {
		if strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

func blockLen(size int64, i int) int {
	off := int64(i) * blockSize
	return int(min(int64(blockSize), size-off))
}

// copyBlock copies a block this box already has, if it still hashes as
// expected.
func copyBlock(dst *os.File, at int64, src string, off int64, n int, want []byte) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return err
	}
	if !bytes.Equal(blockHash(buf), want) {
		return fmt.Errorf("changed")
	}
	_, err = dst.WriteAt(buf, at)
	return err
}

// freeSpace says how much room a folder's file system has left, for an
// error about running out of it.
func freeSpace(dir string) string {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return ""
	}
	var parts []string
	for _, sub := range []string{".", syncDir + "/stage", syncDir + "/snapshots"} {
		var n int64
		filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					n += fi.Size()
				}
			}
			return nil
		})
		parts = append(parts, fmt.Sprintf("%s %s", sub, humanBytes(n)))
	}
	return fmt.Sprintf(" (%s free of %s in %s; files: %s)", humanBytes(int64(st.Bavail)*st.Bsize), humanBytes(int64(st.Blocks)*st.Bsize), dir, strings.Join(parts, ", "))
}
