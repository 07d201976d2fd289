package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// The demo's bulk data (bulk/): as much incompressible data as a test or a
// benchmark asks for, the size of a real application's recordings, made
// on the box so it does not have to cross the network.
const (
	bulkDir      = "bulk"
	bulkFileSize = 16 << 20
	bulkMaxMiB   = 8 << 10
)

// bulkAnswer is what the bulk routes answer.
type bulkAnswer struct {
	Files  int    `json:"files"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"` // over the names and contents, in name order
}

// fillBulk replaces bulk/ with ?mib= MiB of pseudo-random data, in files of
// 16 MiB, each fsynced, and answers their digest.
func (a *app) fillBulk(w http.ResponseWriter, r *http.Request) {
	mib, err := strconv.Atoi(r.URL.Query().Get("mib"))
	if err != nil || mib < 1 || mib > bulkMaxMiB {
		http.Error(w, fmt.Sprintf("?mib= is 1 to %d", bulkMaxMiB), http.StatusBadRequest)
		return
	}
	dir := filepath.Join(a.dir, bulkDir)
	if err := os.RemoveAll(dir); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var seed [32]byte
	copy(seed[:], strconv.FormatInt(int64(mib), 10))
	src := rand.NewChaCha8(seed)
	left := int64(mib) << 20
	for i := 0; left > 0; i++ {
		n := min(left, bulkFileSize)
		if err := writeBulk(filepath.Join(dir, fmt.Sprintf("part-%04d", i)), io.LimitReader(src, n)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		left -= n
	}
	a.answerBulk(w, r)
}

func writeBulk(path string, r io.Reader) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// answerBulk reads bulk/ back and answers its digest.
func (a *app) answerBulk(w http.ResponseWriter, r *http.Request) {
	dir := filepath.Join(a.dir, bulkDir)
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sort.Slice(es, func(i, j int) bool { return es[i].Name() < es[j].Name() })
	h := sha256.New()
	var ans bulkAnswer
	for _, e := range es {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(h, "%s\x00", e.Name())
		n, err := io.Copy(h, f)
		f.Close()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		ans.Files++
		ans.Bytes += n
	}
	ans.SHA256 = hex.EncodeToString(h.Sum(nil))
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(ans)
}

func (a *app) deleteBulk(w http.ResponseWriter, r *http.Request) {
	if err := os.RemoveAll(filepath.Join(a.dir, bulkDir)); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
