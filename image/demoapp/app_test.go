package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func do(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

func TestCounterPersists(t *testing.T) {
	dir := t.TempDir()
	a, err := newApp(dir, "1.0.0", false)
	if err != nil {
		t.Fatal(err)
	}
	h := a.handler()
	if w := do(t, h, "GET", "/count"); w.Code != 200 || w.Body.String() != "0\n" {
		t.Errorf("GET /count: %d %q", w.Code, w.Body)
	}
	if w := do(t, h, "GET", "/count?inc=1"); w.Body.String() != "1\n" {
		t.Errorf("GET /count?inc=1: %q", w.Body)
	}
	w := do(t, h, "POST", "/count")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Errorf("POST /count: %d %v", w.Code, w.Header())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, counterFile)); string(b) != "2\n" {
		t.Errorf("counter file %q", b)
	}
	// Another version reads the same data folder.
	b, err := newApp(dir, "1.1.0", false)
	if err != nil {
		t.Fatal(err)
	}
	if w := do(t, b.handler(), "GET", "/"); !strings.Contains(w.Body.String(), `<strong id="counter">2</strong>`) || !strings.Contains(w.Body.String(), `<strong id="version">1.1.0</strong>`) {
		t.Errorf("page:\n%s", w.Body)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temp files left: %v", ents)
	}
}

func TestHealthz(t *testing.T) {
	a, _ := newApp(t.TempDir(), "2.0.0", false)
	if w := do(t, a.handler(), "GET", "/healthz"); w.Code != 200 || w.Body.String() != "ok\n" {
		t.Errorf("healthz: %d %q", w.Code, w.Body)
	}
	b, _ := newApp(t.TempDir(), "2.0.1", true)
	if w := do(t, b.handler(), "GET", "/healthz"); w.Code != 500 {
		t.Errorf("broken healthz: %d", w.Code)
	}
	if w := do(t, b.handler(), "GET", "/"); !strings.Contains(w.Body.String(), "built broken") {
		t.Errorf("the page does not say the build is broken")
	}
}

func TestInfoAndErrors(t *testing.T) {
	dir := t.TempDir()
	a, _ := newApp(dir, "1.0.0", false)
	var info struct {
		Version string `json:"version"`
		Counter int64  `json:"counter"`
		UID     int    `json:"uid"`
	}
	w := do(t, a.handler(), "GET", "/api/info")
	if err := json.Unmarshal(w.Body.Bytes(), &info); err != nil || info.Version != "1.0.0" || info.UID != os.Getuid() {
		t.Errorf("info %s %v", w.Body, err)
	}
	if w := do(t, a.handler(), "GET", "/nothing"); w.Code != 404 {
		t.Errorf("unknown path: %d", w.Code)
	}
	if w := do(t, a.handler(), "DELETE", "/count"); w.Code != 405 {
		t.Errorf("DELETE /count: %d", w.Code)
	}
	os.WriteFile(filepath.Join(dir, counterFile), []byte("many\n"), 0o644)
	if _, err := newApp(dir, "1.0.0", false); err == nil || !strings.Contains(err.Error(), "not a number") {
		t.Errorf("damaged counter: %v", err)
	}
	// A data folder it cannot write to: the count is not claimed.
	ro := filepath.Join(t.TempDir(), "missing")
	c, _ := newApp(ro, "1.0.0", false)
	if w := do(t, c.handler(), "GET", "/count?inc=1"); w.Code != 500 || c.count() != 0 {
		t.Errorf("unwritable: %d, counter %d", w.Code, c.count())
	}
}

func TestBulkFillsReadsBackAndEmpties(t *testing.T) {
	a, err := newApp(t.TempDir(), "1.0.0", false)
	if err != nil {
		t.Fatal(err)
	}
	h := a.handler()
	if w := do(t, h, "POST", "/bulk?mib=0"); w.Code != http.StatusBadRequest {
		t.Fatalf("mib=0: %d", w.Code)
	}
	w := do(t, h, "POST", "/bulk?mib=20")
	var made, read, gone bulkAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &made); err != nil || w.Code != http.StatusOK {
		t.Fatalf("fill: %d %s", w.Code, w.Body)
	}
	if made.Files != 2 || made.Bytes != 20<<20 {
		t.Fatalf("fill %+v", made)
	}
	json.Unmarshal(do(t, h, "GET", "/bulk").Body.Bytes(), &read)
	if read != made {
		t.Fatalf("read back %+v, made %+v", read, made)
	}
	b, _ := os.ReadFile(filepath.Join(a.dir, bulkDir, "part-0000"))
	var c bytes.Buffer
	zw := gzip.NewWriter(&c)
	zw.Write(b)
	zw.Close()
	if c.Len() < len(b)*99/100 {
		t.Fatalf("the bulk data compresses to %d of %d bytes", c.Len(), len(b))
	}
	if w := do(t, h, "DELETE", "/bulk"); w.Code != http.StatusNoContent {
		t.Fatalf("delete: %d", w.Code)
	}
	json.Unmarshal(do(t, h, "GET", "/bulk").Body.Bytes(), &gone)
	if gone.Files != 0 || gone.SHA256 == made.SHA256 {
		t.Fatalf("after delete %+v", gone)
	}
}

func TestUnameRunsTheToolOnThePath(t *testing.T) {
	a, _ := newApp(t.TempDir(), "1.0.0", false)
	bin := t.TempDir()
	os.WriteFile(filepath.Join(bin, "uname"), []byte("#!/bin/sh\n[ \"$1\" = -r ] && echo 6.1.0-test\n"), 0o755)
	t.Setenv("PATH", bin)
	if w := do(t, a.handler(), "GET", "/api/uname"); w.Code != 200 || w.Body.String() != "6.1.0-test\n" {
		t.Errorf("GET /api/uname: %d %q", w.Code, w.Body)
	}
	t.Setenv("PATH", t.TempDir())
	if w := do(t, a.handler(), "GET", "/api/uname"); w.Code != 500 || !strings.Contains(w.Body.String(), "uname -r") {
		t.Errorf("GET /api/uname without the tool: %d %q", w.Code, w.Body)
	}
}
