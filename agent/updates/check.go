package updates

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
)

// Errors the HTTP layer maps to statuses.
var (
	ErrNoServer  = errors.New("no update server")
	ErrServer    = errors.New("update server failed")
	ErrNoCatalog = errors.New("no catalog")
	ErrBlocked   = errors.New("update blocked")
	ErrUnknown   = errors.New("not in the catalog")
	ErrBusy      = errors.New("an update is being installed")
	ErrClock     = errors.New("clock not synchronized")
	ErrRequest   = errors.New("bad request")
)

// Check fetches the catalog from the update server, verifies its signature
// and keeps it (on the data partition too, so the listing survives a
// reboot). A catalog that does not verify changes nothing.
func (m *Manager) Check(ctx context.Context) error {
	cfg := m.Config()
	if cfg.Server == "" {
		return fmt.Errorf("%w: set the update server first (PUT /api/v1/updates/config)", ErrNoServer)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cj, err := m.fetch(ctx, cfg.Server, catalog.JSONFile, catalog.MaxSize)
	if err != nil {
		return err
	}
	sig, err := m.fetch(ctx, cfg.Server, catalog.SigFile, 64<<10)
	if err != nil {
		return err
	}
	c, err := catalog.Verify(cj, sig, m.Trusted)
	if err != nil {
		return fmt.Errorf("%w: the catalog from %s was refused: %v", ErrServer, cfg.Server, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cfg != cfg {
		return fmt.Errorf("%w: the update settings changed during the check; check again", ErrServer)
	}
	// A catalog's version only goes up (TUF's rollback rule): an older
	// one, though signed, may list a build the vendor withdrew.
	if held := m.cat; held != nil && c.Version < held.Version {
		m.log().Warn("an older catalog was refused", "server", cfg.Server, "version", c.Version, "held", held.Version)
		return fmt.Errorf("%w: the catalog from %s is version %d (generated %s), older than version %d (generated %s) that this appliance already holds; "+
			"the server, or something between it and the appliance, is serving an old catalog: check that the update server has the vendor's current release",
			ErrServer, cfg.Server, c.Version, c.Generated.Format(time.RFC3339), held.Version, held.Generated.Format(time.RFC3339))
	}
	if err := atomicfile.Write(filepath.Join(m.Dir, catalogSig), sig, 0o600); err != nil {
		return fmt.Errorf("save the catalog: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(m.Dir, catalogFile), cj, 0o600); err != nil {
		return fmt.Errorf("save the catalog: %w", err)
	}
	m.cat, m.checkedAt = c, m.now()
	m.log().Info("update catalog checked", "server", cfg.Server, "version", c.Version, "entries", len(c.Entries), "generated", c.Generated, "expires", c.Expires)
	return nil
}

// fetch GETs a small file of the release folder.
func (m *Manager) fetch(ctx context.Context, server, name string, limit int64) ([]byte, error) {
	u := strings.TrimRight(server, "/") + "/" + name
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrServer, err)
	}
	resp, err := m.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: the update server at %s did not answer (%v); check its address and the network", ErrServer, server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: the update server answered %s for %s; check its address", ErrServer, resp.Status, u)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s broke off: %v", ErrServer, u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrServer, u, limit)
	}
	return b, nil
}

// Listing is what GET /api/v1/updates shows.
type Listing struct {
	Server    string           `json:"server"`
	Channel   string           `json:"channel"`
	CheckedAt time.Time        `json:"checked_at,omitzero"`
	Catalog   *CatalogInfo     `json:"catalog,omitempty"`
	Installed []InstalledItem  `json:"installed"`
	Updates   []catalog.Update `json:"updates"`
}

// CatalogInfo describes the catalog the listing comes from.
type CatalogInfo struct {
	Version   uint64    `json:"version"`
	Generated time.Time `json:"generated"`
	Expires   time.Time `json:"expires"`
	// Stale: the catalog expired by the appliance's synchronized clock;
	// Note says what that means (or that the clock cannot tell yet).
	Stale bool   `json:"stale"`
	Note  string `json:"note,omitempty"`
}

func (m *Manager) catalogInfo(c *catalog.Catalog) *CatalogInfo {
	ci := &CatalogInfo{Version: c.Version, Generated: c.Generated, Expires: c.Expires}
	switch {
	case m.Synced == nil || !m.Synced():
		ci.Note = "the clock is not synchronized, so the catalog's expiry (" + c.Expires.Format(time.RFC3339) + ") cannot be checked yet"
	case c.Expired(m.now()):
		ci.Stale = true
		ci.Note = "this catalog expired on " + c.Expires.Format(time.RFC3339) + ": newer releases may exist that the update server does not offer " +
			"(it may be out of date, or something between it and the appliance holds back updates); check for updates again, and if it stays stale, check the update server"
	}
	return ci
}

// InstalledItem is one installed package.
type InstalledItem struct {
	Kind    string `json:"kind"`
	Name    string `json:"name,omitempty"`
	Version string `json:"version"`
	// Wait is when the next package of this kind may install, when the
	// installed one asked for a wait that has not passed.
	WaitUntil time.Time `json:"wait_until,omitzero"`
}

// List evaluates the last catalog against what the box has installed now.
func (m *Manager) List() Listing {
	box := m.Box()
	m.mu.Lock()
	c, checked, cfg := m.cat, m.checkedAt, m.cfg
	m.mu.Unlock()
	l := Listing{Server: cfg.Server, Channel: cfg.channel(), CheckedAt: checked, Installed: []InstalledItem{}, Updates: []catalog.Update{}}
	for _, k := range []kpkg.Kind{kpkg.KindBase, kpkg.KindApp} {
		v, ok := box.Installed[k]
		if !ok {
			continue
		}
		it := InstalledItem{Kind: string(k), Name: box.Names[k], Version: v.String()}
		if h, ok := box.LastInstall[k]; ok && h.Wait > 0 && box.Now.Before(h.At.Add(h.Wait)) {
			it.WaitUntil = h.At.Add(h.Wait)
		}
		l.Installed = append(l.Installed, it)
	}
	if c != nil {
		l.Catalog = m.catalogInfo(c)
		l.Updates = c.Updates(box)
	}
	return l
}
