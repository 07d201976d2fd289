package updates

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
)

// served is a release signed by a new key, served by newServer
// (httptest.NewServer or NewTLSServer), and the Manager of a box at base
// and app 1.0.0 set to it.
func served(t *testing.T, newServer func(http.Handler) *httptest.Server) (ed25519.PrivateKey, string, *httptest.Server, *Manager) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := release(t, key)
	srv := newServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	box := &fakeBox{installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}}
	m := newManager(t, box, key)
	if err := m.SetConfig(Config{Server: srv.URL}); err != nil {
		t.Fatal(err)
	}
	return key, dir, srv, m
}

// resign signs dir's packages again as a catalog of version v, generated
// at gen and fresh for life.
func resign(t *testing.T, dir string, key ed25519.PrivateKey, v uint64, gen time.Time, life time.Duration) {
	t.Helper()
	if _, err := catalog.BuildWith(dir, key, catalog.BuildOptions{Generated: gen, Version: v, Lifetime: life}); err != nil {
		t.Fatal(err)
	}
}

// A catalog older than the one the box holds is refused with a sentence,
// also after the agent restarts, and the listing stays the newer one's.
func TestOlderCatalogIsRefused(t *testing.T) {
	key, dir, _, m := served(t, httptest.NewServer)
	now := time.Now()
	// The old catalog, saved as an attacker would replay it.
	resign(t, dir, key, 5, now.Add(-time.Hour), 0)
	oldJSON, _ := os.ReadFile(filepath.Join(dir, catalog.JSONFile))
	oldSig, _ := os.ReadFile(filepath.Join(dir, catalog.SigFile))
	resign(t, dir, key, 6, now, 0)
	ctx := context.Background()
	if err := m.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if l := m.List(); l.Catalog == nil || l.Catalog.Version != 6 || l.Catalog.Stale {
		t.Fatalf("after checking version 6: %+v", l.Catalog)
	}
	os.WriteFile(filepath.Join(dir, catalog.JSONFile), oldJSON, 0o644)
	os.WriteFile(filepath.Join(dir, catalog.SigFile), oldSig, 0o644)
	for _, mgr := range []*Manager{m, restart(t, m)} {
		err := mgr.Check(ctx)
		if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "version 5") || !strings.Contains(err.Error(), "older than version 6") {
			t.Fatalf("an older catalog: %v", err)
		}
		if v := mgr.List().Catalog.Version; v != 6 {
			t.Fatalf("after the refusal the box lists catalog version %d", v)
		}
	}
	// The same version again, and a newer one, are taken.
	resign(t, dir, key, 6, now, 0)
	if err := m.Check(ctx); err != nil {
		t.Fatalf("the same version again: %v", err)
	}
	resign(t, dir, key, 7, now.Add(time.Minute), 0)
	if err := m.Check(ctx); err != nil || m.List().Catalog.Version != 7 {
		t.Fatalf("a newer catalog: %v", err)
	}
}

func restart(t *testing.T, m *Manager) *Manager {
	t.Helper()
	m2 := &Manager{Dir: m.Dir, Trusted: m.Trusted, Serial: m.Serial, Hardware: m.Hardware, Installed: m.Installed, Installer: m.Installer, Synced: m.Synced}
	if err := m2.Load(); err != nil {
		t.Fatal(err)
	}
	return m2
}

// An expired catalog is listed as stale with a sentence, once the clock
// can tell; updates are still listed.
func TestExpiredCatalogIsStale(t *testing.T) {
	key, dir, _, m := served(t, httptest.NewServer)
	synced := true
	m.Synced = func() bool { return synced }
	resign(t, dir, key, 9, time.Now().Add(-48*time.Hour), 24*time.Hour)
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := m.List()
	if l.Catalog == nil || !l.Catalog.Stale || !strings.Contains(l.Catalog.Note, "expired on") || len(l.Updates) == 0 {
		t.Fatalf("an expired catalog: %+v, %d updates", l.Catalog, len(l.Updates))
	}
	synced = false
	if l := m.List(); l.Catalog.Stale || !strings.Contains(l.Catalog.Note, "not synchronized") {
		t.Fatalf("with the clock unsynchronized: %+v", l.Catalog)
	}
	synced = true
	resign(t, dir, key, 10, time.Now(), 0)
	if err := m.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := m.List(); l.Catalog.Stale || l.Catalog.Note != "" {
		t.Fatalf("a fresh catalog: %+v", l.Catalog)
	}
}
