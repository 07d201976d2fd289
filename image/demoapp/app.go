package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// app is the demo's state: its version and the counter kept on disk.
type app struct {
	dir     string
	version string
	broken  bool

	mu      sync.Mutex
	counter int64
}

// counterFile is the counter's file in the data folder.
const counterFile = "counter"

func newApp(dir, version string, broken bool) (*app, error) {
	a := &app{dir: dir, version: version, broken: broken}
	b, err := os.ReadFile(filepath.Join(dir, counterFile))
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, err
	default:
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a number", filepath.Join(dir, counterFile), b)
		}
		a.counter = n
	}
	return a, nil
}

func (a *app) count() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.counter
}

// increment adds one and stores the counter before answering, so a count
// the client saw is never lost.
func (a *app) increment() (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := writeAtomic(filepath.Join(a.dir, counterFile), []byte(strconv.FormatInt(a.counter+1, 10)+"\n")); err != nil {
		return a.counter, err
	}
	a.counter++
	return a.counter, nil
}

// writeAtomic leaves either the old or the new content after a power cut:
// a temp file, fsync, rename, fsync of the folder.
func writeAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".counter.tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.page)
	mux.HandleFunc("GET /count", a.getCount)
	mux.HandleFunc("POST /count", a.postCount)
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /api/info", a.info)
	mux.HandleFunc("GET /api/uname", a.uname)
	mux.HandleFunc("PUT /files/{name}", a.putFile)
	mux.HandleFunc("GET /files/{name}", a.getFile)
	mux.HandleFunc("POST /history", a.postHistory)
	mux.HandleFunc("POST /bulk", a.fillBulk)
	mux.HandleFunc("GET /bulk", a.answerBulk)
	mux.HandleFunc("DELETE /bulk", a.deleteBulk)
	mux.HandleFunc("POST /bulk/change", a.changeBulk)
	return mux
}

// The demo's file store (files/) and history (history/log): what a real
// application keeps and what the appliance's backup treats by the guide's
// rules (the store's small files; the history only when asked).
func fileName(w http.ResponseWriter, r *http.Request) (string, bool) {
	n := r.PathValue("name")
	ok := n != "" && len(n) <= 64 && n[0] != '.'
	for _, c := range n {
		ok = ok && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')
	}
	if !ok {
		http.Error(w, "a file name is 1 to 64 letters, digits, '.', '_' or '-'", http.StatusBadRequest)
	}
	return n, ok
}

func (a *app) putFile(w http.ResponseWriter, r *http.Request) {
	n, ok := fileName(w, r)
	if !ok {
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<20))
	if err != nil {
		http.Error(w, "at most 4 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	dir := filepath.Join(a.dir, "files")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if err := writeAtomic(filepath.Join(dir, n), b); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *app) getFile(w http.ResponseWriter, r *http.Request) {
	n, ok := fileName(w, r)
	if !ok {
		return
	}
	http.ServeFile(w, r, filepath.Join(a.dir, "files", n))
}

func (a *app) postHistory(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		http.Error(w, "at most 64 KiB", http.StatusRequestEntityTooLarge)
		return
	}
	dir := filepath.Join(a.dir, "history")
	os.MkdirAll(dir, 0o755)
	f, err := os.OpenFile(filepath.Join(dir, "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		_, err = f.Write(append(b, '\n'))
		if err == nil {
			err = f.Sync()
		}
		f.Close()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>keel demo {{.Version}}</title></head>
<body>
<h1>keel demo</h1>
<p>Version <strong id="version">{{.Version}}</strong>{{if .Broken}} (built broken: its health check fails){{end}}</p>
<p>Counter: <strong id="counter">{{.Counter}}</strong></p>
<form method="post" action="/count"><button type="submit">Count</button></form>
</body></html>
`))

func (a *app) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl.Execute(w, struct {
		Version string
		Counter int64
		Broken  bool
	}{a.version, a.count(), a.broken})
}

func (a *app) getCount(w http.ResponseWriter, r *http.Request) {
	n := a.count()
	if r.URL.Query().Get("inc") == "1" {
		var err error
		if n, err = a.increment(); err != nil {
			http.Error(w, "the counter could not be stored: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%d\n", n)
}

func (a *app) postCount(w http.ResponseWriter, r *http.Request) {
	if _, err := a.increment(); err != nil {
		http.Error(w, "the counter could not be stored: "+err.Error(), http.StatusInternalServerError)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (a *app) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if a.broken {
		http.Error(w, "broken build", http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "ok")
}

// uname answers with the kernel release as the base's `uname -r` prints
// it: an application using the tools the base ships on its PATH.
func (a *app) uname(w http.ResponseWriter, r *http.Request) {
	out, err := exec.CommandContext(r.Context(), "uname", "-r").CombinedOutput()
	if err != nil {
		http.Error(w, fmt.Sprintf("uname -r: %v: %s", err, out), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(out)
}

func (a *app) info(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"version": a.version, "counter": a.count(), "broken": a.broken,
		"uid": os.Getuid(), "gid": os.Getgid(),
	})
}
