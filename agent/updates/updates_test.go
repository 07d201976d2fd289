package updates

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/agent/inventory"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/downloadkey"
	"keel.dev/keel/image/kpkg"
)

// release writes the demo release's shape (tiny payloads) into a folder
// and signs its catalog.
func release(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, catalog.PackagesDir), 0o755)
	pkgs := []struct {
		kind     kpkg.Kind
		name, v  string
		requires []string
		wait     time.Duration
	}{
		{kpkg.KindBase, "keel", "1.0.0", nil, 0},
		{kpkg.KindBase, "keel", "1.1.0", nil, 0},
		{kpkg.KindApp, "demo", "1.0.0", nil, 0},
		{kpkg.KindApp, "demo", "1.0.1", nil, 24 * time.Hour},
		{kpkg.KindApp, "demo", "1.1.0", []string{"base >= 1.1.0"}, 0},
		{kpkg.KindApp, "demo", "2.0.0", []string{"app >= 1.1.0"}, 0},
	}
	for _, p := range pkgs {
		m := kpkg.Manifest{Kind: p.kind, Name: p.name, Version: kpkg.MustParseVersion(p.v), Wait: kpkg.Duration(p.wait)}
		for _, r := range p.requires {
			req, err := kpkg.ParseRequirement(r)
			if err != nil {
				t.Fatal(err)
			}
			m.Requires = append(m.Requires, req)
		}
		payload := make([]byte, 300<<10)
		rand.Read(payload)
		var b bytes.Buffer
		if err := kpkg.Write(&b, m, bytes.NewReader(payload), key); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("%s-%s-%s.kpkg", p.name, p.kind, p.v)
		if err := os.WriteFile(filepath.Join(dir, catalog.PackagesDir, name), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := catalog.Build(dir, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeBox is the rest of the appliance: what is installed, and an installer
// that checks the package stream and records it.
type fakeBox struct {
	mu        sync.Mutex
	installed map[kpkg.Kind]kpkg.Version
	got       []string // name version, in install order
	keys      []ed25519.PublicKey
}

func (f *fakeBox) versions() (map[kpkg.Kind]kpkg.Version, map[kpkg.Kind]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := map[kpkg.Kind]kpkg.Version{}
	for k, x := range f.installed {
		v[k] = x
	}
	return v, map[kpkg.Kind]string{kpkg.KindBase: "keel", kpkg.KindApp: "demo"}
}

func (f *fakeBox) install(ctx context.Context, body io.Reader, _ catalog.Entry, _ <-chan struct{}) (string, string, error) {
	p, err := kpkg.Open(body, f.keys)
	if err != nil {
		return "", "", err
	}
	if _, err := io.Copy(io.Discard, p.Payload()); err != nil {
		return "", "", err
	}
	if err := p.Verified(); err != nil {
		return "", "", err
	}
	m := p.Manifest
	f.mu.Lock()
	f.installed[m.Kind] = m.Version
	f.got = append(f.got, m.Name+" "+m.Version.String())
	f.mu.Unlock()
	return "job1", fmt.Sprintf("%s %s installed", m.Name, m.Version), nil
}

func newManager(t *testing.T, box *fakeBox, key ed25519.PrivateKey) *Manager {
	t.Helper()
	box.keys = []ed25519.PublicKey{key.Public().(ed25519.PublicKey)}
	_, id, _ := ed25519.GenerateKey(rand.Reader)
	m := &Manager{Dir: t.TempDir(), Trusted: box.keys, Serial: "KEEL-1", Hardware: "Standard PC",
		Installed: box.versions, Installer: box.install, Identity: id, Synced: func() bool { return true }}
	if err := m.Load(); err != nil {
		t.Fatal(err)
	}
	return m
}

func listing(m *Manager) map[string]catalog.Update {
	out := map[string]catalog.Update{}
	for _, u := range m.List().Updates {
		out[u.Entry.Name+" "+u.Entry.Version.String()] = u
	}
	return out
}

// The vendor guide's path: base 1.1.0 and app 1.0.1 installable, app 1.1.0
// blocked by the base, app 2.0.0 by app 1.1.0; after the base, 1.1.0
// installs, then 2.0.0. A blocked install is refused with the reason.
func TestCheckListAndInstallInOrder(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	srv := httptest.NewServer(http.FileServer(http.Dir(release(t, key))))
	defer srv.Close()
	box := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}}
	m := newManager(t, box, key)
	ctx := context.Background()
	if err := m.Check(ctx); !errors.Is(err, ErrNoServer) {
		t.Fatalf("check without a server: %v", err)
	}
	if err := m.SetConfig(Config{Server: srv.URL}); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	l := listing(m)
	for name, want := range map[string]string{"keel 1.1.0": "", "demo 1.0.1": "", "demo 1.1.0": "requires base >= 1.1.0; installed 1.0.0", "demo 2.0.0": "requires app >= 1.1.0; installed 1.0.0"} {
		u, ok := l[name]
		if !ok || u.Installable != (want == "") || !strings.Contains(u.Reason, want) {
			t.Errorf("%s: %+v; want installable=%v reason %q", name, u, want == "", want)
		}
	}
	_, _, err := m.Install(ctx, Request{Name: "demo", Version: "1.1.0"}, nil)
	if !errors.Is(err, ErrBlocked) || !strings.Contains(err.Error(), "requires base >= 1.1.0; installed 1.0.0") || statusOf(err) != http.StatusConflict {
		t.Fatalf("install a blocked update: %v", err)
	}
	// No name: the next step of the plan, the base first.
	if _, msg, err := m.Install(ctx, Request{}, nil); err != nil || !strings.Contains(msg, "keel 1.1.0") {
		t.Fatalf("install the next update: %q %v", msg, err)
	}
	if u := listing(m)["demo 1.1.0"]; !u.Installable {
		t.Fatalf("after the base, demo 1.1.0: %+v", u)
	}
	for _, v := range []string{"1.1.0", "2.0.0"} {
		if _, _, err := m.Install(ctx, Request{Name: "demo", Version: v}, nil); err != nil {
			t.Fatalf("install demo %s: %v", v, err)
		}
	}
	if got := strings.Join(box.got, ", "); got != "keel 1.1.0, demo 1.1.0, demo 2.0.0" {
		t.Fatalf("installed %s", got)
	}
	if _, _, err := m.Install(ctx, Request{Name: "demo", Version: "9.0.0"}, nil); !errors.Is(err, ErrUnknown) {
		t.Fatalf("an update the catalog does not have: %v", err)
	}
	// The catalog is kept across a restart of the agent: with the box back
	// at its first versions, it offers what it offered before.
	m2 := &Manager{Dir: m.Dir, Trusted: m.Trusted, Serial: m.Serial, Hardware: m.Hardware, Installed: box.versions}
	if err := m2.Load(); err != nil || m2.List().CheckedAt.IsZero() {
		t.Fatalf("after a restart: %v %+v", err, m2.List())
	}
	box.installed = map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}
	if got, want := offered(listing(m2)), offered(l); got != want || len(l) == 0 {
		t.Fatalf("after a restart, the box is offered\n%s\nnot as before\n%s", got, want)
	}
}

// offered lists updates one a line: name, version, whether installable.
func offered(l map[string]catalog.Update) string {
	var lines []string
	for name, u := range l {
		lines = append(lines, fmt.Sprintf("%s installable=%v", name, u.Installable))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// A package that does not match the catalog's SHA-256 (here replaced on
// the server by another package signed with the same key, which kpkg alone
// accepts) fails the install before the installer is done with it.
func TestInstallRefusesPackageNotInCatalog(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := release(t, key)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	box := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}}
	m := newManager(t, box, key)
	var log bytes.Buffer
	m.Log = slog.New(slog.NewTextHandler(&log, nil))
	m.SetConfig(Config{Server: srv.URL})
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Install(context.Background(), Request{Name: "demo", Version: "1.0.1"}, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "download complete") {
		t.Errorf("no \"download complete\" in the log:\n%s", log.String())
	}

	file := filepath.Join(dir, catalog.PackagesDir, "keel-base-1.1.0.kpkg")
	old, _ := os.ReadFile(file)
	payload := make([]byte, 300<<10)
	rand.Read(payload)
	var b bytes.Buffer
	if err := kpkg.Write(&b, kpkg.Manifest{Kind: kpkg.KindBase, Name: "keel", Version: kpkg.MustParseVersion("1.1.0")}, bytes.NewReader(payload), key); err != nil {
		t.Fatal(err)
	}
	if b.Len() != len(old) {
		t.Fatalf("the replacement has %d bytes, the package %d", b.Len(), len(old))
	}
	os.WriteFile(file, b.Bytes(), 0o644)
	_, _, err := m.Install(context.Background(), Request{Name: "keel", Version: "1.1.0"}, nil)
	if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "keel-base-1.1.0.kpkg has SHA-256") || !strings.Contains(err.Error(), "check for updates again") {
		t.Fatalf("a package that is not the catalog's: %v", err)
	}
	if got := strings.Join(box.got, ", "); got != "demo 1.0.1" || box.installed[kpkg.KindBase].String() != "1.0.0" {
		t.Fatalf("installed %s; base %s", got, box.installed[kpkg.KindBase])
	}
	if _, ok := m.Box().LastInstall[kpkg.KindBase]; ok {
		t.Fatal("the refused package was recorded as installed")
	}
}

// A wait asked for by the last install holds the next package of its kind
// until it has passed, unless ignore_wait.
func TestWaitBlocksUnlessIgnored(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	srv := httptest.NewServer(http.FileServer(http.Dir(release(t, key))))
	defer srv.Close()
	box := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.1.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.1")}}
	m := newManager(t, box, key)
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	m.Now = func() time.Time { return now }
	m.SetConfig(Config{Server: srv.URL})
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	inv := &inventory.Inventory{Now: m.Now}
	m.LastInstalls = inv.LastInstalls
	// However it came (here an upload), the install's wait holds.
	if err := inv.Recorded(kpkg.Manifest{Kind: kpkg.KindApp, Name: "demo", Version: kpkg.MustParseVersion("1.0.1"), Wait: kpkg.Duration(24 * time.Hour)}, inventory.Upload); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	u := listing(m)["demo 1.1.0"]
	if u.Installable || !u.InstallableAt.Equal(now.Add(23*time.Hour)) {
		t.Fatalf("during the wait: %+v", u)
	}
	if _, _, err := m.Install(context.Background(), Request{Name: "demo", Version: "1.1.0"}, nil); !errors.Is(err, ErrBlocked) {
		t.Fatalf("install during the wait: %v", err)
	}
	if _, _, err := m.Install(context.Background(), Request{Name: "demo", Version: "1.1.0", IgnoreWait: true}, nil); err != nil {
		t.Fatalf("forced install during the wait: %v", err)
	}
}

// A connection dropped in the middle of a package resumes with a Range
// request where it stopped: the install gets every byte once, and the
// box fetches little more than the package's size.
func TestDownloadResumesAfterDroppedConnection(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := release(t, key)
	files := http.FileServer(http.Dir(dir))
	var served atomic.Int64
	var cut atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".kpkg") && cut.CompareAndSwap(false, true) {
			// Send half the package, then drop the connection.
			b, _ := os.ReadFile(filepath.Join(dir, r.URL.Path))
			hj, _ := w.(http.Hijacker)
			conn, buf, _ := hj.Hijack()
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: \"v1\"\r\n\r\n", len(b))
			buf.Write(b[:len(b)/2])
			buf.Flush()
			served.Add(int64(len(b) / 2))
			conn.Close()
			return
		}
		w.Header().Set("ETag", `"v1"`) // as image serve sends one
		cw := &countingWriter{ResponseWriter: w, n: &served}
		files.ServeHTTP(cw, r)
	}))
	defer srv.Close()
	box := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}}
	m := newManager(t, box, key)
	m.SetConfig(Config{Server: srv.URL})
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	served.Store(0)
	_, msg, err := m.Install(context.Background(), Request{Name: "keel", Version: "1.1.0"}, nil)
	if err != nil {
		t.Fatalf("install across a dropped connection: %v", err)
	}
	fi, _ := os.Stat(filepath.Join(dir, "packages", "keel-base-1.1.0.kpkg"))
	ratio := float64(served.Load()) / float64(fi.Size())
	t.Logf("%s; served %d bytes for %d (%.3fx)", msg, served.Load(), fi.Size(), ratio)
	if !strings.Contains(msg, "resumed 1 time") || ratio > 1.05 {
		t.Errorf("want one resume and at most 1.05x the package size served; got %q, %.3fx", msg, ratio)
	}
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// A catalog that does not verify, or a server that is down, is refused
// with a sentence and changes nothing.
func TestCheckRefusals(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := release(t, key)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	box := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0")}}
	m := newManager(t, box, key)
	m.SetConfig(Config{Server: srv.URL})
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := m.List()
	cj := filepath.Join(dir, catalog.JSONFile)
	b, _ := os.ReadFile(cj)
	os.WriteFile(cj, bytes.Replace(b, []byte(`"1.1.0"`), []byte(`"1.1.1"`), 1), 0o644)
	err := m.Check(context.Background())
	if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "signature") || statusOf(err) != http.StatusBadGateway {
		t.Fatalf("a tampered catalog: %v", err)
	}
	srv.Close()
	if err := m.Check(context.Background()); !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "did not answer") {
		t.Fatalf("server down: %v", err)
	}
	if after := m.List(); len(after.Updates) != len(before.Updates) || !after.CheckedAt.Equal(before.CheckedAt) {
		t.Fatalf("a refused check changed the listing: %+v", after)
	}
	if err := m.SetConfig(Config{Server: "ftp://x"}); err == nil || !strings.Contains(err.Error(), "server:") {
		t.Fatalf("bad server URL: %v", err)
	}
	if err := m.SetConfig(Config{Server: srv.URL, Channel: "Beta Channel"}); err == nil || !strings.Contains(err.Error(), "channel:") {
		t.Fatalf("bad channel: %v", err)
	}
}

// Download keys: refused while the clock is not synchronized; otherwise
// signed with the identity key, naming the serial and installed versions,
// valid for 30 minutes.
func TestDownloadKey(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	box := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}}
	m := newManager(t, box, key)
	synced := false
	m.Synced = func() bool { return synced }
	if _, err := m.DownloadKey(); !errors.Is(err, ErrClock) || !strings.Contains(err.Error(), "NTP") {
		t.Fatalf("unsynchronized clock: %v", err)
	}
	synced = true
	text, err := m.DownloadKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := downloadkey.Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	pubText, _ := m.IdentityKey()
	pub, err := downloadkey.ParsePublicKey(pubText)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Verify(pub, time.Now()); err != nil {
		t.Fatal(err)
	}
	if k.Serial != "KEEL-1" || k.Installed[kpkg.KindApp].String() != "1.0.0" || k.Expires.Sub(k.Issued) != 30*time.Minute {
		t.Fatalf("key body %+v", k.Body)
	}
	if err := k.Verify(pub, time.Now().Add(31*time.Minute)); err == nil {
		t.Fatal("the key verifies after 31 minutes")
	}
}
