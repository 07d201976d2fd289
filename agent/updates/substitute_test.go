package updates

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/install"
	"keel.dev/keel/agent/inventory"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// realBox is a box with the real installer over files: an ESP with the
// boot state (slot a runs base 1.0.0) and two base slot files.
type realBox struct {
	esp string
	inv *inventory.Inventory
	in  *install.Installer
}

func newRealBox(t *testing.T, keys []ed25519.PublicKey, installed func() map[kpkg.Kind]kpkg.Version) *realBox {
	t.Helper()
	dir := t.TempDir()
	b := &realBox{esp: filepath.Join(dir, "esp"), inv: &inventory.Inventory{}}
	os.MkdirAll(filepath.Join(b.esp, "EFI/keel"), 0o755)
	st := bootstate.Initial("1.0.0", "")
	block, _ := st.Encode()
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		os.WriteFile(filepath.Join(b.esp, p), block, 0o644)
	}
	for _, l := range layout.Labels {
		os.WriteFile(filepath.Join(dir, "base-"+string(l)), make([]byte, 2<<20), 0o644)
	}
	b.in = &install.Installer{
		Trusted: keys, Installed: installed, Inventory: b.inv,
		Slots: slots.NewStore(b.esp), Running: layout.SlotA,
		OpenSlot: func(l layout.Label) (install.Device, int64, error) {
			f, err := os.OpenFile(filepath.Join(dir, "base-"+string(l)), os.O_RDWR, 0)
			return f, 2 << 20, err
		},
	}
	return b
}

// installer is what the agent passes as Manager.Installer.
func (b *realBox) installer(ctx context.Context, body io.Reader, e catalog.Entry, after <-chan struct{}) (string, string, error) {
	j, err := b.in.Start(ctx, body, install.Options{Size: e.Size, RebootLater: true, Via: inventory.Online,
		Expect: &install.Expected{Kind: e.Kind, Name: e.Name, Version: e.Version}})
	if j == nil {
		return "", "", err
	}
	return j.ID(), j.Status().Message, err
}

func (b *realBox) state(t *testing.T) *bootstate.State {
	t.Helper()
	st, _, err := slots.NewStore(b.esp).Read()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// The update server (or anyone between it and the box) answers the base
// the operator chose with another vendor-signed package: a shorter build
// of the same version, the same padded with zeros to the listed size, an
// app in its place sent chunked. Each is refused with a sentence, nothing
// is staged and nothing is recorded; the package listed installs.
func TestSubstitutedPackagesAreRefused(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := release(t, key)
	listed, _ := os.ReadFile(filepath.Join(dir, catalog.PackagesDir, "keel-base-1.1.0.kpkg"))
	signed := func(m kpkg.Manifest, n int) []byte {
		payload := make([]byte, n)
		rand.Read(payload)
		var b bytes.Buffer
		if err := kpkg.Write(&b, m, bytes.NewReader(payload), key); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	shorter := signed(kpkg.Manifest{Kind: kpkg.KindBase, Name: "keel", Version: kpkg.MustParseVersion("1.1.0")}, 100<<10)
	padded := append(append([]byte{}, shorter...), make([]byte, len(listed)-len(shorter))...)
	app := signed(kpkg.Manifest{Kind: kpkg.KindApp, Name: "demo", Version: kpkg.MustParseVersion("1.1.0")}, 100<<10)
	app = append(app, make([]byte, len(listed)-len(app))...)

	for _, c := range []struct {
		name    string
		serve   []byte
		chunked bool
		want    string
	}{
		{"shorter", shorter, false, "update server"},
		{"padded with zeros", padded, false, "has SHA-256"},
		{"an app in its place, chunked", app, true, "the update server sent app demo 1.1.0 where the catalog lists base keel 1.1.0"},
		{"the listed package", listed, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := http.FileServer(http.Dir(dir))
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasSuffix(r.URL.Path, "/keel-base-1.1.0.kpkg") {
					files.ServeHTTP(w, r)
					return
				}
				if c.chunked {
					for b := c.serve; len(b) > 0; {
						n := min(len(b), 64<<10)
						w.Write(b[:n])
						w.(http.Flusher).Flush()
						b = b[n:]
					}
					return
				}
				w.Header().Set("ETag", `"sub"`)
				http.ServeContent(w, r, "pkg", time.Unix(0, 0), bytes.NewReader(c.serve))
			}))
			defer srv.Close()
			fb := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}}
			m := newManager(t, fb, key)
			m.Resumes = 1
			box := newRealBox(t, m.Trusted, func() map[kpkg.Kind]kpkg.Version { v, _ := fb.versions(); return v })
			m.Installer = func(ctx context.Context, body io.Reader, e catalog.Entry, after <-chan struct{}) (string, string, error) {
				return box.installer(ctx, body, e, after)
			}
			m.SetConfig(Config{Server: srv.URL})
			if err := m.Check(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, _, err := m.Install(context.Background(), Request{Name: "keel", Version: "1.1.0"}, nil)
			st := box.state(t)
			if c.want == "" {
				if err != nil || st.Default != "b" || st.B.Version != "1.1.0" || len(box.inv.History()) != 1 {
					t.Fatalf("the listed package: %v; boot state %+v", err, st)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v; want one saying %q", err, c.want)
			}
			if errors.Is(err, install.ErrNotListed) && install.HTTPStatus(err) != http.StatusBadGateway {
				t.Errorf("status %d", install.HTTPStatus(err))
			}
			if st.Default != "a" || st.B.Bootable || st.B.Version != "" {
				t.Errorf("a substitute was staged: %+v", st)
			}
			if h := box.inv.History(); len(h) != 0 {
				t.Errorf("a substitute was recorded: %+v", h)
			}
		})
	}
}

// A server reached over https cannot send the box to plain http.
func TestRedirectFromHTTPSToHTTPIsRefused(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	plain := httptest.NewServer(http.FileServer(http.Dir(release(t, key))))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL+r.URL.Path, http.StatusFound)
	}))
	defer secure.Close()
	m := newManager(t, &fakeBox{installed: map[kpkg.Kind]kpkg.Version{}}, key)
	m.Client = secure.Client()
	m.SetConfig(Config{Server: secure.URL})
	err := m.Check(context.Background())
	if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "from https to plain http") {
		t.Fatalf("check through a redirect to http: %v", err)
	}
	// The same server over plain http is the operator's choice.
	m.SetConfig(Config{Server: plain.URL})
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}
