package failover

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Snapshot is what a box kept when it lost a split brain: its
// configuration files as they were, and each file of its application data
// that the winner's sync replaced or removed.
type Snapshot struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Files   int       `json:"files"`
	Bytes   int64     `json:"bytes"`
}

// snapshotConfig keeps the configuration files as they are now.
func (s *Service) snapshotConfig(name string) error {
	dir := filepath.Join(s.snapshotDir(name), "config")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, sec := range s.Sections {
		b, err := os.ReadFile(sec.Path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := writeSynced(filepath.Join(dir, strings.ReplaceAll(sec.Name, "/", "_")), b, 0o600); err != nil {
			return err
		}
	}
	if s.Network != nil {
		if n, err := s.Network.Synced(); err == nil {
			writeSynced(filepath.Join(dir, "network-shared.json"), n, 0o600)
		}
	}
	return nil
}

// roots are the folders a snapshot's files are in: its configuration
// on the data partition, its application files in the data volume.
func (s *Service) snapshotRoots(name string) map[string]string {
	r := map[string]string{"config": filepath.Join(s.snapshotDir(name), "config")}
	if dir, _ := s.appData(); dir != "" {
		r["app"] = filepath.Join(appSnapshots(dir), name, "files")
	}
	return r
}

func validSnapshotName(n string) bool {
	return n != "" && !strings.ContainsAny(n, "/\\") && n != "." && n != ".."
}

// Snapshots lists the kept snapshots, newest first.
func (s *Service) Snapshots() []Snapshot {
	ents, _ := os.ReadDir(filepath.Join(s.Dir, "snapshots"))
	out := []Snapshot{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		sn := Snapshot{Name: e.Name()}
		if fi, err := e.Info(); err == nil {
			sn.Created = fi.ModTime().UTC()
		}
		for _, root := range s.snapshotRoots(e.Name()) {
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					sn.Files++
					if fi, err := d.Info(); err == nil {
						sn.Bytes += fi.Size()
					}
				}
				return nil
			})
		}
		out = append(out, sn)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name })
	return out
}

// WriteSnapshot writes a snapshot as a tar archive: config/SECTION and
// app/PATH.
func (s *Service) WriteSnapshot(w io.Writer, name string) error {
	if !validSnapshotName(name) {
		return fs.ErrNotExist
	}
	if _, err := os.Stat(s.snapshotDir(name)); err != nil {
		return fs.ErrNotExist
	}
	tw := tar.NewWriter(w)
	roots := s.snapshotRoots(name)
	for _, top := range []string{"config", "app"} {
		root, ok := roots[top]
		if !ok {
			continue
		}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil
				}
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if rel == "." {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				link, _ = os.Readlink(p)
			}
			h, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return nil // sockets and the like
			}
			h.Name = top + "/" + filepath.ToSlash(rel)
			if fi.IsDir() {
				h.Name += "/"
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				f, err := os.Open(p)
				if err != nil {
					return err
				}
				_, err = io.Copy(tw, f)
				f.Close()
				return err
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("write snapshot %s: %w", name, err)
		}
	}
	return tw.Close()
}

// HasSnapshot reports whether a snapshot of that name is kept.
func (s *Service) HasSnapshot(name string) bool {
	if !validSnapshotName(name) {
		return false
	}
	_, err := os.Stat(s.snapshotDir(name))
	return err == nil
}

// DeleteSnapshot removes a snapshot.
func (s *Service) DeleteSnapshot(name string) error {
	if !validSnapshotName(name) {
		return fs.ErrNotExist
	}
	if _, err := os.Stat(s.snapshotDir(name)); err != nil {
		return fs.ErrNotExist
	}
	for _, root := range s.snapshotRoots(name) {
		os.RemoveAll(filepath.Dir(root))
	}
	return os.RemoveAll(s.snapshotDir(name))
}
