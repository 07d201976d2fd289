package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/bundle"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/downloadkey"
	"keel.dev/keel/image/kpkg"
)

var releaseNow = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// testRelease builds the demo release's catalog over small packages (the
// payloads are not slot images) and registers one appliance.
func testRelease(t *testing.T) (dir string, vendor, identity ed25519.PrivateKey) {
	t.Helper()
	dir = t.TempDir()
	vendor = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	identity = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	os.MkdirAll(filepath.Join(dir, "packages"), 0o755)
	for i, p := range demoRelease {
		m, err := p.manifest()
		if err != nil {
			t.Fatal(err)
		}
		payload := filepath.Join(dir, "payload")
		os.WriteFile(payload, bytes.Repeat([]byte{byte(i)}, 5000+i*1000), 0o644)
		if err := writePackageFile(filepath.Join(dir, "packages", fmt.Sprintf("%s-%s-%s.kpkg", p.Name, p.Kind, p.Version)), m, payload, vendor); err != nil {
			t.Fatal(err)
		}
		os.Remove(payload)
	}
	if _, err := catalog.Build(dir, vendor, releaseNow); err != nil {
		t.Fatal(err)
	}
	enc, _ := downloadkey.EncodePublicKey(identity.Public().(ed25519.PublicKey))
	reg, _ := json.Marshal(map[string]string{"KX1-0001": enc})
	os.WriteFile(filepath.Join(dir, "appliances.json"), reg, 0o644)
	return dir, vendor, identity
}

func testServer(t *testing.T, dir string, vendor ed25519.PrivateKey, now time.Time) *httptest.Server {
	s := &updateServer{dir: dir, trusted: []ed25519.PublicKey{vendor.Public().(ed25519.PublicKey)},
		now: func() time.Time { return now }, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	srv := httptest.NewServer(s.handler())
	t.Cleanup(srv.Close)
	return srv
}

func downloadKey(t *testing.T, identity ed25519.PrivateKey, serial, base, app string, issued time.Time) []byte {
	t.Helper()
	text, err := downloadkey.Issue(downloadkey.Body{
		Serial: serial, Hardware: "keel-vm", Channel: "stable",
		Installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion(base), kpkg.KindApp: kpkg.MustParseVersion(app)},
		Names:     map[kpkg.Kind]string{kpkg.KindBase: "keel", kpkg.KindApp: "demo"},
		Issued:    issued, Expires: issued.Add(downloadkey.DefaultLifetime),
	}, identity)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestServeCatalogAndPackages(t *testing.T) {
	dir, vendor, _ := testRelease(t)
	srv := testServer(t, dir, vendor, releaseNow)

	resp, cj := get(t, srv.URL+"/catalog.json")
	_, sig := get(t, srv.URL+"/catalog.sig")
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
		t.Fatalf("catalog.json: %s, ETag %q", resp.Status, resp.Header.Get("ETag"))
	}
	c, err := catalog.Verify(cj, sig, []ed25519.PublicKey{vendor.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := get(t, srv.URL+"/catalog.json", "If-None-Match", resp.Header.Get("ETag")); r.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %s", r.Status)
	}

	e := c.Entries[3]
	whole, _ := os.ReadFile(filepath.Join(dir, e.File))
	resp, b := get(t, srv.URL+"/"+e.File)
	if resp.StatusCode != 200 || !bytes.Equal(b, whole) || resp.Header.Get("Accept-Ranges") != "bytes" {
		t.Fatalf("%s: %s, %d bytes, Accept-Ranges %q", e.File, resp.Status, len(b), resp.Header.Get("Accept-Ranges"))
	}
	etag := resp.Header.Get("ETag")

	// A download that broke at byte 1000 resumes.
	resp, b = get(t, srv.URL+"/"+e.File, "Range", "bytes=1000-", "If-Range", etag)
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, whole[1000:]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 1000-%d/%d", len(whole)-1, len(whole)) {
		t.Errorf("resume: %s, %d bytes, %q", resp.Status, len(b), resp.Header.Get("Content-Range"))
	}
	// The file changed since: the whole new file comes instead.
	resp, b = get(t, srv.URL+"/"+e.File, "Range", "bytes=1000-", "If-Range", `"stale"`)
	if resp.StatusCode != 200 || len(b) != len(whole) {
		t.Errorf("resume of a changed file: %s, %d bytes", resp.Status, len(b))
	}
	resp, _ = get(t, srv.URL+"/"+e.File, "Range", fmt.Sprintf("bytes=%d-", len(whole)+10))
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Errorf("a range past the end: %s", resp.Status)
	}

	os.WriteFile(filepath.Join(filepath.Dir(dir), "secret.kpkg"), []byte("SECRET-CONTENT"), 0o644)
	os.Symlink(filepath.Join(filepath.Dir(dir), "secret.kpkg"), filepath.Join(dir, "packages", "link.kpkg"))
	for _, p := range []string{"/packages/..%2f..%2fsecret.kpkg", "/packages/..%2fappliances.json", "/packages/%2e%2e", "/packages/link.kpkg",
		"/packages/missing.kpkg", "/appliances.json", "/packages/"} {
		if resp, b := get(t, srv.URL+p); resp.StatusCode < 400 || bytes.Contains(b, []byte("SECRET-CONTENT")) || bytes.Contains(b, []byte("KX1")) {
			t.Errorf("%s: %s %q", p, resp.Status, b)
		}
	}

	resp, b = get(t, srv.URL+"/")
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`<textarea name="key"`)) || !bytes.Contains(b, []byte(`action="/redeem"`)) {
		t.Errorf("form page: %s\n%s", resp.Status, b)
	}
}

func TestServeRedeem(t *testing.T) {
	dir, vendor, identity := testRelease(t)
	now := releaseNow.Add(48 * time.Hour)
	srv := testServer(t, dir, vendor, now)
	key := downloadKey(t, identity, "KX1-0001", "1.0.0", "1.0.0", now.Add(-5*time.Minute))

	resp, err := http.Post(srv.URL+"/redeem", "text/plain", bytes.NewReader(key))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("redeem: %s: %s", resp.Status, b)
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename=keel-KX1-0001-20261129T1000Z.kbundle` {
		t.Errorf("Content-Disposition %q", cd)
	}
	r, err := bundle.Open(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for {
		e, f, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p, err := kpkg.Open(f, []ed25519.PublicKey{vendor.Public().(ed25519.PublicKey)})
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, p.Payload())
		if err := p.Verified(); err != nil {
			t.Fatal(err)
		}
		order = append(order, e.String())
	}
	if got := strings.Join(order, ", "); got != "base keel 1.1.0, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1" || r.Meta.Serial != "KX1-0001" {
		t.Errorf("bundle for %s: %s", r.Meta.Serial, got)
	}
}

// The key arrives as curl and browsers send it.
func TestServeRedeemReadsKeys(t *testing.T) {
	dir, vendor, identity := testRelease(t)
	srv := testServer(t, dir, vendor, releaseNow)
	key := downloadKey(t, identity, "KX1-0001", "1.1.0", "2.0.0", releaseNow)

	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("key", string(key))
	mw.Close()
	for name, c := range map[string]struct {
		ct   string
		body []byte
	}{
		"raw":                    {"text/plain", key},
		"curl --data-binary":     {"application/x-www-form-urlencoded", key},
		"form":                   {"application/x-www-form-urlencoded", []byte(url.Values{"key": {string(key)}}.Encode())},
		"multipart form":         {mw.FormDataContentType(), mp.Bytes()},
		"no content type at all": {"", key},
	} {
		req, _ := http.NewRequest("POST", srv.URL+"/redeem", bytes.NewReader(c.body))
		if c.ct != "" {
			req.Header.Set("Content-Type", c.ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bundle.IsBundle(b) || fmt.Sprint(len(b)) != resp.Header.Get("Content-Length") {
			t.Errorf("%s: %s, %d bytes (Content-Length %s): %.200s", name, resp.Status, len(b), resp.Header.Get("Content-Length"), b)
		}
	}
}

func TestServeRedeemRefuses(t *testing.T) {
	dir, vendor, identity := testRelease(t)
	now := releaseNow.Add(time.Hour)
	srv := testServer(t, dir, vendor, now)
	stranger := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))

	for name, c := range map[string]struct {
		key    []byte
		status int
		want   string
	}{
		"expired":      {downloadKey(t, identity, "KX1-0001", "1.0.0", "1.0.0", now.Add(-time.Hour)), 403, "the download key expired at 2026-11-27 10:30 UTC; ask the appliance for a new one"},
		"future":       {downloadKey(t, identity, "KX1-0001", "1.0.0", "1.0.0", now.Add(time.Hour)), 403, "which is in the future"},
		"unregistered": {downloadKey(t, identity, "KX1-0009", "1.0.0", "1.0.0", now), 403, `appliance "KX1-0009" is not registered: add its serial and identity public key to appliances.json`},
		"forged":       {downloadKey(t, stranger, "KX1-0001", "1.0.0", "1.0.0", now), 403, "not signed by the appliance's registered identity key"},
		"up to date":   {downloadKey(t, identity, "KX1-0001", "1.1.0", "2.0.1", now), 409, "nothing to install: appliance KX1-0001 is up to date"},
		"garbage":      {[]byte("hello"), 400, "this is not a download key"},
	} {
		resp, err := http.Post(srv.URL+"/redeem", "text/plain", bytes.NewReader(c.key))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || !strings.Contains(string(b), c.want) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: %s %q\nwant %d %q", name, resp.Status, b, c.status, c.want)
		}
	}

	// The form gets an HTML page with the sentence.
	expired := downloadKey(t, identity, "KX1-0001", "1.0.0", "1.0.0", now.Add(-time.Hour))
	resp, err := http.PostForm(srv.URL+"/redeem", url.Values{"key": {string(expired)}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(b), "the download key expired at 2026-11-27 10:30 UTC; ask the appliance for a new one") {
		t.Errorf("form: %s %s", resp.Status, b)
	}
}

func TestRedeemCommand(t *testing.T) {
	dir, vendor, identity := testRelease(t)
	now := releaseNow.Add(time.Hour)
	srv := testServer(t, dir, vendor, now)
	work := t.TempDir()
	keyFile := filepath.Join(work, "key.txt")
	os.WriteFile(keyFile, downloadKey(t, identity, "KX1-0001", "1.1.0", "1.1.0", now), 0o644)
	out := filepath.Join(work, "out", "b.kbundle")
	var stdout bytes.Buffer
	if err := redeem([]string{"-server", srv.URL + "/", "-key", keyFile, "-o", out}, &stdout); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bundle for appliance KX1-0001, made 2026-11-27 11:00 UTC: 2 packages", "1. app demo 2.0.0", "2. app demo 2.0.1", "written to " + out} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	b, err := os.ReadFile(out)
	if err != nil || !bundle.IsBundle(b) {
		t.Fatalf("bundle file: %v", err)
	}

	os.WriteFile(keyFile, downloadKey(t, identity, "KX1-0001", "1.0.0", "1.0.0", now.Add(-2*time.Hour)), 0o644)
	refused := filepath.Join(work, "refused.kbundle")
	err = redeem([]string{"-server", srv.URL, "-key", keyFile, "-o", refused}, &stdout)
	if err == nil || !strings.Contains(err.Error(), "the server refused the key (403 Forbidden): the download key expired at 2026-11-27 09:30 UTC; ask the appliance for a new one") {
		t.Errorf("refusal: %v", err)
	}
	if _, err := os.Stat(refused); err == nil {
		t.Error("a refusal left a file")
	}
	if left, _ := filepath.Glob(filepath.Join(work, ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestReleaseWaits(t *testing.T) {
	wait := func(pkgs []releasePackage, v string) time.Duration {
		for _, p := range pkgs {
			if p.Kind == kpkg.KindApp && p.Version == v {
				return p.Wait
			}
		}
		return -1
	}
	if wait(demoRelease, "1.0.1") != 0 || wait(demoRelease, "1.1.0") != 24*time.Hour {
		t.Errorf("default waits: 1.0.1 %v, 1.1.0 %v", wait(demoRelease, "1.0.1"), wait(demoRelease, "1.1.0"))
	}
	pkgs, err := applyWaits(demoRelease, []string{"*=0", "2.0.0=1h"})
	if err != nil || wait(pkgs, "1.1.0") != 0 || wait(pkgs, "2.0.0") != time.Hour || wait(demoRelease, "1.1.0") != 24*time.Hour {
		t.Errorf("overrides: %v, 1.1.0 %v, 2.0.0 %v", err, wait(pkgs, "1.1.0"), wait(pkgs, "2.0.0"))
	}
	if _, err := applyWaits(demoRelease, []string{"3.0.0=1h"}); err == nil || !strings.Contains(err.Error(), "no app version 3.0.0") {
		t.Errorf("an unknown version: %v", err)
	}
	if _, err := applyWaits(demoRelease, []string{"1.0.0"}); err == nil || !strings.Contains(err.Error(), "is not VERSION=DURATION") {
		t.Errorf("no duration: %v", err)
	}
}
