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

// changeBulk overwrites ?permille= thousandths of bulk/'s bytes with new
// pseudo-random data, in runs of ?run= KiB at random places (runs of a few
// KiB are a database's page writes, long ones new recordings), fsyncs, and
// answers the digest: the change a failover sync then carries.
func (a *app) changeBulk(w http.ResponseWriter, r *http.Request) {
	permille, err1 := strconv.Atoi(r.URL.Query().Get("permille"))
	run, err2 := strconv.Atoi(r.URL.Query().Get("run"))
	if err1 != nil || err2 != nil || permille < 1 || permille > 1000 || run < 1 || run > 16<<10 {
		http.Error(w, "?permille= is 1 to 1000 and ?run= 1 to 16384 (KiB)", http.StatusBadRequest)
		return
	}
	dir := filepath.Join(a.dir, bulkDir)
	es, err := os.ReadDir(dir)
	if err != nil || len(es) == 0 {
		http.Error(w, "there is no bulk data to change; POST /bulk?mib=N first", http.StatusConflict)
		return
	}
	var total int64
	sizes := make([]int64, len(es))
	for i, e := range es {
		fi, err := e.Info()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		sizes[i] = fi.Size()
		total += sizes[i]
	}
	runBytes := int64(run) << 10
	src := rand.NewChaCha8([32]byte{byte(permille), byte(run), byte(run >> 8), 'c'})
	rng := rand.New(src)
	buf := make([]byte, runBytes)
	files := map[int]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for left := total * int64(permille) / 1000; left > 0; left -= runBytes {
		i := rng.IntN(len(es))
		if sizes[i] < runBytes {
			continue
		}
		f := files[i]
		if f == nil {
			if f, err = os.OpenFile(filepath.Join(dir, es[i].Name()), os.O_WRONLY, 0); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			files[i] = f
		}
		src.Read(buf)
		off := rng.Int64N(sizes[i]-runBytes+1) &^ 4095
		if _, err := f.WriteAt(buf, off); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	a.answerBulk(w, r)
}
