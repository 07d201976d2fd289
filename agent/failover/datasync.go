package failover

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// loc is where a block with some hash already is on this box.
type loc struct {
	path string
	off  int64
}

// stageApp compares the primary's application data with this box's and
// stages the new version of every file that differs: blocks this box has
// anywhere (the same file, or a file that moved) are copied locally, the
// rest are fetched. The staged files go into the journal j.
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
	byPath := map[string]entry{}
	index := map[string]loc{}
	for _, e := range local {
		byPath[e.Path] = e
		if e.Kind == "f" {
			for i := 0; i < e.blocks(); i++ {
				index[string(e.hash(i))] = loc{e.Path, int64(i) * blockSize}
			}
		}
	}
	j.AppDir = dir
	remote := map[string]bool{}
	var want []blockWant
	type building struct {
		st   staged
		f    *os.File
		left int // blocks still to come from the primary
	}
	var build []*building
	stage := appStage(dir)
	os.RemoveAll(stage)
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return err
	}
	for _, r := range m.Entries {
		if _, ok := inside(dir, r.Path); !ok {
			return fmt.Errorf("the primary's manifest names %q, outside the data folder", r.Path)
		}
		remote[r.Path] = true
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
		case "l":
			if !have || l.Link != r.Link {
				j.Links = append(j.Links, r)
			} else if !l.sameMeta(r) {
				j.Meta = append(j.Meta, r)
			}
		case "f":
			if have && l.Size == r.Size && bytes.Equal(l.Hashes, r.Hashes) {
				if !l.sameMeta(r) {
					j.Meta = append(j.Meta, r)
				}
				continue
			}
			if r.Size > 0 && r.blocks() != int((r.Size+blockSize-1)/blockSize) {
				return fmt.Errorf("the primary's manifest has %d hashes for %s of %d bytes", r.blocks(), r.Path, r.Size)
			}
			name := strconv.Itoa(len(build))
			f, err := os.OpenFile(filepath.Join(stage, name), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
			if err != nil {
				return err
			}
			if err := f.Truncate(r.Size); err != nil {
				f.Close()
				return err
			}
			b := &building{st: staged{Name: name, Entry: r}, f: f}
			var fetch []int
			for i := 0; i < r.blocks(); i++ {
				if at, ok := index[string(r.hash(i))]; ok {
					if err := copyBlock(f, int64(i)*blockSize, filepath.Join(dir, filepath.FromSlash(at.path)), at.off, blockLen(r.Size, i), r.hash(i)); err == nil {
						continue
					}
				}
				fetch = append(fetch, i)
			}
			b.left = len(fetch)
			if len(fetch) > 0 {
				want = append(want, blockWant{Path: r.Path, Blocks: fetch})
			}
			build = append(build, b)
		}
	}
	defer func() {
		for _, b := range build {
			b.f.Close()
		}
	}()
	for _, l := range local {
		if !remote[l.Path] && !underRemoved(l.Path, j.Remove) {
			j.Remove = append(j.Remove, l.Path)
		}
	}
	sort.Slice(j.Remove, func(a, b int) bool { return strings.Count(j.Remove[a], "/") > strings.Count(j.Remove[b], "/") })

	// Fetch the missing blocks in one stream, checking each against the
	// manifest: a file the application changed since gives another hash
	// and keeps this box's version until the next sync.
	changed := map[string]bool{}
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
		body := bufio.NewReaderSize(counter{a.Body, &rep.Bytes}, 256<<10)
		buf := make([]byte, blockSize)
		byFile := map[string]*building{}
		for _, b := range build {
			byFile[b.st.Entry.Path] = b
		}
		done := 0
		for _, w := range want {
			b := byFile[w.Path]
			for _, i := range w.Blocks {
				var hdr [4]byte
				if _, err := io.ReadFull(body, hdr[:]); err != nil {
					a.Body.Close()
					return fmt.Errorf("the primary's blocks stopped: %w", err)
				}
				n := int(binary.BigEndian.Uint32(hdr[:]))
				if n > blockSize {
					a.Body.Close()
					return fmt.Errorf("the primary sent a block of %d bytes", n)
				}
				if _, err := io.ReadFull(body, buf[:n]); err != nil {
					a.Body.Close()
					return fmt.Errorf("the primary's blocks stopped: %w", err)
				}
				rep.DataBytes += int64(n)
				done++
				if done%256 == 0 {
					say(0.2+0.7*float64(done)/float64(total), fmt.Sprintf("fetched %d of %d blocks", done, total))
				}
				if n != blockLen(b.st.Entry.Size, i) || !bytes.Equal(blockHash(buf[:n]), b.st.Entry.hash(i)) {
					changed[w.Path] = true
					continue
				}
				if _, err := b.f.WriteAt(buf[:n], int64(i)*blockSize); err != nil {
					a.Body.Close()
					return fmt.Errorf("stage %s: %w", w.Path, err)
				}
			}
		}
		a.Body.Close()
	}
	for _, b := range build {
		p := b.st.Entry.Path
		if changed[p] {
			continue
		}
		if err := b.f.Sync(); err != nil {
			return fmt.Errorf("stage %s: %w", p, err)
		}
		staged := filepath.Join(stage, b.st.Name)
		setMeta(staged, b.st.Entry)
		j.Files = append(j.Files, b.st)
	}
	if len(changed) > 0 {
		rep.Result = fmt.Sprintf("%d files changed on the primary while they were read; the next sync takes them", len(changed))
		s.log().Info("files changed on the primary during the sync", "count", len(changed))
	}
	return syncTree(dir)
}

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
