package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"keel.dev/keel/image/bundle"
)

// redeem is `image redeem`: it sends a download key to an update server
// and saves the bundle it answers with, checked as it streams.
func redeem(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("redeem", flag.ExitOnError)
	server := fl.String("server", "http://127.0.0.1:8780", "update server `URL` (`image serve`)")
	keyPath := fl.String("key", "", "download key `file` from the appliance (- for standard input)")
	out := fl.String("o", "", "bundle `file` to write (default: the name the server gives, in this folder)")
	fl.Parse(args)
	if fl.NArg() > 0 {
		return fmt.Errorf("redeem: unexpected arguments %q", fl.Args())
	}
	if *keyPath == "" {
		return fmt.Errorf("redeem: give the download key with -key FILE (copy it from the appliance's Updates page)")
	}
	var key []byte
	var err error
	if *keyPath == "-" {
		key, err = io.ReadAll(io.LimitReader(os.Stdin, maxKeyRequest))
	} else {
		key, err = os.ReadFile(*keyPath)
	}
	if err != nil {
		return fmt.Errorf("redeem: %w", err)
	}

	url := strings.TrimSuffix(*server, "/") + "/redeem"
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, ResponseHeaderTimeout: 2 * time.Minute}}
	resp, err := client.Post(url, "text/plain; charset=utf-8", strings.NewReader(string(key)))
	if err != nil {
		return fmt.Errorf("redeem: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("redeem: the server refused the key (%s): %s", resp.Status, strings.TrimSpace(string(msg)))
	}

	if *out == "" {
		*out = "keel.kbundle"
		if _, p, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err == nil && p["filename"] != "" {
			*out = safeName(filepath.Base(p["filename"]))
		}
	}
	meta, err := saveBundle(*out, resp.Body, resp.ContentLength)
	if err != nil {
		return fmt.Errorf("redeem: %w", err)
	}
	var total int64
	for _, e := range meta.Packages {
		total += e.Size
	}
	fmt.Fprintf(stdout, "bundle for appliance %s, made %s: %d packages, %d bytes, in install order:\n",
		meta.Serial, meta.Created.UTC().Format("2006-01-02 15:04 UTC"), len(meta.Packages), total)
	for i, e := range meta.Packages {
		fmt.Fprintf(stdout, "  %d. %-24s %s, %d bytes\n", i+1, e.String(), e.File, e.Size)
	}
	fmt.Fprintf(stdout, "written to %s: upload it on the appliance (Updates, manual install) before the key expires\n", *out)
	return nil
}

// saveBundle writes the bundle next to out and renames it into place once
// it has streamed through bundle.Reader (sizes and hashes checked), so
// out is never a partial or damaged bundle.
func saveBundle(out string, body io.Reader, length int64) (bundle.Meta, error) {
	if dir := filepath.Dir(out); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return bundle.Meta{}, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+"-*.tmp")
	if err != nil {
		return bundle.Meta{}, err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	n := &countingWriter{w: tmp}
	tee := io.TeeReader(body, n)
	r, err := bundle.Open(tee)
	for err == nil {
		var f io.Reader
		if _, f, err = r.Next(); err == nil {
			_, err = io.Copy(io.Discard, f)
		}
	}
	if errors.Is(err, io.EOF) {
		// Whatever follows the end-of-archive marker (nothing, from keel's
		// server) is kept, so the file is what the server sent.
		_, err = io.Copy(io.Discard, tee)
	}
	if err == nil && length >= 0 && n.n != length {
		err = fmt.Errorf("the server announced %d bytes and sent %d: run redeem again", length, n.n)
	}
	if err := commitFile(tmp, out, err); err != nil {
		return bundle.Meta{}, err
	}
	return r.Meta, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
