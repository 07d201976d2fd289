package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"keel.dev/keel/image/bundle"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/downloadkey"
	"keel.dev/keel/image/kpkg"
)

// serve is `image serve`: the update server for a release folder.
func serve(args []string) error {
	fl := flag.NewFlagSet("serve", flag.ExitOnError)
	dir := fl.String("dir", "build/release", "release `folder` (from `image release`)")
	addr := fl.String("addr", "127.0.0.1:8780", "`address` to listen on")
	trustedPath := fl.String("trusted", "build/keys/vendor.pub", "PEM `file` of the vendor's public keys; the catalog must verify with one")
	fl.Parse(args)
	if fl.NArg() > 0 {
		return fmt.Errorf("serve: unexpected arguments %q", fl.Args())
	}
	pem, err := os.ReadFile(*trustedPath)
	if err != nil {
		return fmt.Errorf("serve: trusted keys: %w", err)
	}
	trusted, err := kpkg.ParsePublicKeys(pem)
	if err != nil {
		return fmt.Errorf("serve: %s: %w", *trustedPath, err)
	}
	s := &updateServer{dir: *dir, trusted: trusted, now: time.Now, log: slog.Default()}
	// A release that does not verify is noticed now, not by the first box.
	c, err := s.catalog()
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hs := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		hs.Shutdown(shut)
	}()
	slog.Info("serving release", "dir", *dir, "url", "http://"+ln.Addr().String()+"/", "packages", len(c.Entries),
		"generated", c.Generated)
	if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// updateServer serves a release folder: its catalog and packages for
// appliances online, and bundles for download keys. It reads the folder
// on each request, so a rebuilt release is served without a restart.
type updateServer struct {
	dir     string
	trusted []ed25519.PublicKey
	now     func() time.Time
	log     *slog.Logger
}

// maxKeyRequest bounds a redeem request: a key is about 1 KiB.
const maxKeyRequest = 64 << 10

func (s *updateServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.serveForm)
	mux.HandleFunc("GET /"+catalog.JSONFile, func(w http.ResponseWriter, r *http.Request) {
		s.serveFile(w, r, catalog.JSONFile, "application/json")
	})
	mux.HandleFunc("GET /"+catalog.SigFile, func(w http.ResponseWriter, r *http.Request) {
		s.serveFile(w, r, catalog.SigFile, "application/json")
	})
	mux.HandleFunc("GET /"+catalog.PackagesDir+"/{file}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		if !plainPackageName(name) {
			http.Error(w, fmt.Sprintf("%q is not a package of this release: packages are plain names ending in .kpkg, listed in %s", name, catalog.JSONFile), http.StatusNotFound)
			return
		}
		s.serveFile(w, r, path.Join(catalog.PackagesDir, name), "application/octet-stream")
	})
	mux.HandleFunc("POST /redeem", s.serveRedeem)
	return s.logged(mux)
}

// plainPackageName accepts names such as demo-app-1.1.0.kpkg and nothing
// that could leave the packages folder.
func plainPackageName(name string) bool {
	if !strings.HasSuffix(name, ".kpkg") || strings.HasPrefix(name, ".") || len(name) > 200 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == '+') {
			return false
		}
	}
	return true
}

// serveFile serves a file of the release folder with Range, If-Range and
// conditional requests (http.ServeContent). The ETag names the file's size
// and modification time: a rebuilt file gets a new one, so a resumed
// download does not splice two versions.
func (s *updateServer) serveFile(w http.ResponseWriter, r *http.Request, name, contentType string) {
	f, err := os.OpenInRoot(s.dir, name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.Error(w, fmt.Sprintf("this release has no %s", name), http.StatusNotFound)
			return
		}
		s.log.Error("open", "file", name, "err", err)
		http.Error(w, fmt.Sprintf("this release has no %s", name), http.StatusNotFound)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, fmt.Sprintf("this release has no file %s", name), http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("ETag", fmt.Sprintf(`"%x-%x"`, st.Size(), st.ModTime().UnixNano()))
	if !strings.HasPrefix(name, catalog.PackagesDir+"/") {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, path.Base(name), st.ModTime(), f)
}

// catalog reads and verifies the release's catalog.
func (s *updateServer) catalog() (*catalog.Catalog, error) {
	cj, err := os.ReadFile(filepath.Join(s.dir, catalog.JSONFile))
	if err != nil {
		return nil, fmt.Errorf("the release in %s has no catalog (%v): build it with `image release`", s.dir, err)
	}
	sig, err := os.ReadFile(filepath.Join(s.dir, catalog.SigFile))
	if err != nil {
		return nil, fmt.Errorf("the release in %s has no catalog signature (%v): build it with `image release`", s.dir, err)
	}
	return catalog.Verify(cj, sig, s.trusted)
}

// redeemError is a refusal with its HTTP status.
type redeemError struct {
	status int
	msg    string
}

func (e *redeemError) Error() string { return e.msg }

func refuse(status int, err error) error { return &redeemError{status, err.Error()} }

// serveRedeem turns a download key (form field "key", or the raw body)
// into the bundle its appliance needs. A refusal is a 4xx with a sentence:
// an HTML page for the form, plain text otherwise.
func (s *updateServer) serveRedeem(w http.ResponseWriter, r *http.Request) {
	text, fromForm, err := readKey(w, r)
	if err == nil {
		err = s.redeem(w, text)
	}
	if err == nil {
		return
	}
	var re *redeemError
	if !errors.As(err, &re) {
		re = &redeemError{http.StatusInternalServerError, err.Error()}
	}
	s.log.Warn("redeem refused", "status", re.status, "reason", re.msg)
	if !fromForm {
		http.Error(w, re.msg, re.status)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(re.status)
	pageTemplate.Execute(w, page{Error: re.msg})
}

// readKey reads a download key from the form's "key" field or, when the
// request has none (`curl --data-binary @key.txt` sends a form's content
// type), the raw body.
func readKey(w http.ResponseWriter, r *http.Request) (text []byte, fromForm bool, err error) {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxKeyRequest))
	if err != nil {
		return nil, false, refuse(http.StatusBadRequest, fmt.Errorf("the request could not be read (%v): send the download key, at most %d bytes", err, maxKeyRequest))
	}
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/x-www-form-urlencoded":
		if v, err := url.ParseQuery(string(raw)); err == nil && v.Has("key") {
			return []byte(v.Get("key")), true, nil
		}
	case "multipart/form-data":
		form, err := multipart.NewReader(bytes.NewReader(raw), params["boundary"]).ReadForm(maxKeyRequest)
		if err != nil {
			return nil, true, refuse(http.StatusBadRequest, fmt.Errorf("the form could not be read (%v): paste the download key and send it again", err))
		}
		defer form.RemoveAll()
		if v := form.Value["key"]; len(v) > 0 {
			return []byte(v[0]), true, nil
		}
		return nil, true, refuse(http.StatusBadRequest, fmt.Errorf("the form has no field \"key\": paste the download key into it"))
	}
	return raw, false, nil
}

func (s *updateServer) redeem(w http.ResponseWriter, text []byte) error {
	key, err := downloadkey.Parse(text)
	if err != nil {
		return refuse(http.StatusBadRequest, err)
	}
	reg, err := downloadkey.LoadRegistry(filepath.Join(s.dir, downloadkey.RegistryFile))
	if err != nil {
		return refuse(http.StatusForbidden, err)
	}
	pub, err := reg.Lookup(key.Serial)
	if err != nil {
		return refuse(http.StatusForbidden, err)
	}
	now := s.now()
	if err := key.Verify(pub, now); err != nil {
		return refuse(http.StatusForbidden, err)
	}
	c, err := s.catalog()
	if err != nil {
		return err
	}
	box := catalog.Box{Serial: key.Serial, Channel: key.Channel, Hardware: key.Hardware,
		Installed: key.Installed, Names: key.Names, Now: now}
	plan, err := c.Plan(box)
	if err != nil {
		return refuse(http.StatusConflict, err)
	}

	meta := bundle.Meta{Serial: key.Serial, Created: now.UTC()}
	var files []io.Reader
	for _, e := range plan {
		f, err := os.OpenInRoot(s.dir, e.File)
		if err != nil {
			return fmt.Errorf("the release lacks %s, which its catalog lists: rebuild the release", e.File)
		}
		defer f.Close()
		if st, err := f.Stat(); err != nil || st.Size() != e.Size {
			return fmt.Errorf("%s changed since the catalog was made: rebuild the release", e.File)
		}
		files = append(files, f)
		meta.Packages = append(meta.Packages, bundle.Entry{Kind: e.Kind, Name: e.Name, Version: e.Version,
			File: path.Base(e.File), Size: e.Size, SHA256: e.SHA256})
	}
	size, err := bundle.Size(meta)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("keel-%s-%s.kbundle", safeName(key.Serial), now.UTC().Format("20060102T1504Z"))
	h := w.Header()
	h.Set("Content-Type", "application/x-tar")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	h.Set("Content-Length", fmt.Sprint(size))
	var steps []string
	for _, e := range plan {
		steps = append(steps, e.String())
	}
	s.log.Info("redeem", "serial", key.Serial, "key_id", key.KeyID, "bundle", name, "bytes", size, "packages", strings.Join(steps, ", "))
	if err := bundle.Write(w, meta, files); err != nil {
		// The status is gone; the short body tells the client.
		s.log.Error("redeem: writing the bundle", "serial", key.Serial, "err", err)
	}
	return nil
}

// safeName keeps a serial usable in a file name.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

func (s *updateServer) serveForm(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTemplate.Execute(w, page{})
}

type page struct{ Error string }

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>keel updates</title></head>
<body>
<h1>keel offline updates</h1>
{{if .Error}}<p><strong>The download key was refused:</strong> {{.Error}}</p>
<p><a href="/">Try another key</a></p>
{{else}}<p>Paste the appliance's download key (Updates, on the appliance) and download the bundle of
packages it needs, in install order. Upload the bundle to the appliance before the key expires.</p>
<form method="post" action="/redeem">
<p><textarea name="key" rows="16" cols="70" spellcheck="false" autofocus
placeholder="-----BEGIN KEEL DOWNLOAD KEY-----"></textarea></p>
<p><button type="submit">Download the bundle</button></p>
</form>
{{end}}</body>
</html>
`))

// statusWriter records what a handler answered, for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// ReadFrom keeps io.Copy's sendfile path for files.
func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := io.Copy(s.ResponseWriter, r)
	s.bytes += n
	return n, err
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *updateServer) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		s.log.Info("request", "method", r.Method, "path", r.URL.Path, "range", r.Header.Get("Range"),
			"status", sw.status, "bytes", sw.bytes, "remote", r.RemoteAddr, "ms", time.Since(start).Milliseconds())
	})
}
