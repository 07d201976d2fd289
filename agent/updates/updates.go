// Package updates is the appliance's side of online and offline updates
// (DESIGN.md "Packages"): it keeps the update server's address, checks the
// vendor's signed catalog, lists each update as installable or blocked with
// the reason, downloads and installs one in a single stream that resumes
// where a dropped connection stopped, and issues download keys for offline
// installs.
//
// # HTTP
//
//	GET  /api/v1/updates/config         {"server": URL, "channel": name}
//	PUT  /api/v1/updates/config         the same; 400 names a bad field
//	POST /api/v1/updates/check          fetch and verify the catalog, then as GET
//	GET  /api/v1/updates                installed versions and the updates offered
//	POST /api/v1/updates/install        {"name", "version", "ignore_wait"}: 202 {"job",
//	                                    "message"}; 409 with the reason when blocked
//	GET  /api/v1/updates/download-key   a download key (text); 409 while the
//	                                    clock is not synchronized
//	GET  /api/v1/updates/identity       {"serial", "public_key"} to register the
//	                                    box with the vendor (appliances.json)
package updates

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
)

// Files in Manager.Dir.
const (
	configFile  = "config.json"
	catalogFile = "catalog.json" // the last verified catalog, as fetched
	catalogSig  = "catalog.sig"
)

// DefaultChannel is the channel of a box that names none.
const DefaultChannel = "stable"

// Config is what the operator sets.
type Config struct {
	Server  string `json:"server"`  // base URL of the release folder, e.g. http://updates.example:8780
	Channel string `json:"channel"` // "stable" when empty
	// CA, PEM, pins the vendor's own certificate authority: an https
	// server must then have a certificate it issued, and the public
	// roots the base carries are not used. Empty: the public roots.
	CA string `json:"ca,omitempty"`
}

// Validate names the field that is wrong.
func (c Config) Validate() error {
	if c.Server != "" {
		u, err := url.Parse(c.Server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("server: %q is not an http:// or https:// URL of the release folder, e.g. http://updates.example:8780", c.Server)
		}
	}
	if c.CA != "" {
		if _, err := c.roots(); err != nil {
			return err
		}
	}
	for _, r := range c.Channel {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') || len(c.Channel) > 64 {
			return fmt.Errorf("channel: %q is not 1 to 64 of a-z, 0-9, '-', '_', '.'", c.Channel)
		}
	}
	return nil
}

func (c Config) channel() string {
	if c.Channel == "" {
		return DefaultChannel
	}
	return c.Channel
}

// InstallFunc runs a package stream through the box's installer, as POST
// /api/v1/install does, and returns the job's id and message. e is the
// catalog entry the stream should be: the installer refuses a package
// whose manifest is not e's, and reads body to its end (where its size and
// SHA-256 are checked against e) before anything takes effect. The reboot
// a base package needs waits until rebootAfter is closed.
type InstallFunc func(ctx context.Context, body io.Reader, e catalog.Entry, rebootAfter <-chan struct{}) (job, message string, err error)

// Manager owns the update settings and the last verified catalog on the
// data partition (the install history is the inventory's). Fill in the fields, then call
// Load; the fields must not change afterwards.
type Manager struct {
	Dir      string              // e.g. /data/keel/updates
	Trusted  []ed25519.PublicKey // vendor keys: the catalog must verify with one
	Serial   string
	Hardware string
	// Installed returns the installed version and package name per kind,
	// and LastInstalls the newest install of each kind with the wait it
	// asks for (inventory.Inventory has both).
	Installed    func() (map[kpkg.Kind]kpkg.Version, map[kpkg.Kind]string)
	LastInstalls func() map[kpkg.Kind]catalog.Installed
	Installer    InstallFunc
	// InstallStatus maps an error of Installer to its HTTP status.
	InstallStatus func(error) int
	Identity      ed25519.PrivateKey // signs download keys
	Synced        func() bool        // whether the clock is synchronized
	Client        *http.Client       // nil: a client with sane timeouts
	Now           func() time.Time   // nil: time.Now
	Log           *slog.Logger       // nil: discard
	// Resumes is how often a dropped download is resumed before the
	// install fails; 0 means DefaultResumes.
	Resumes int

	mu         sync.Mutex
	cfg        Config
	roots      *x509.CertPool // cfg.CA parsed; nil for the public roots
	cat        *catalog.Catalog
	checkedAt  time.Time
	installing bool
}

// Load reads the settings and the last catalog,
// which is verified again (the trusted keys may have changed with the base).
func (m *Manager) Load() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return fmt.Errorf("updates: %w", err)
	}
	if err := readJSON(filepath.Join(m.Dir, configFile), &m.cfg); err != nil {
		return err
	}
	if m.cfg.CA != "" {
		pool, err := m.cfg.roots()
		if err != nil {
			return fmt.Errorf("updates: the saved settings: %w; set the update settings again", err)
		}
		m.roots = pool
	}
	cj, err1 := os.ReadFile(filepath.Join(m.Dir, catalogFile))
	sig, err2 := os.ReadFile(filepath.Join(m.Dir, catalogSig))
	if err1 == nil && err2 == nil {
		if c, err := catalog.Verify(cj, sig, m.Trusted); err == nil {
			m.cat = c
			if fi, err := os.Stat(filepath.Join(m.Dir, catalogFile)); err == nil {
				m.checkedAt = fi.ModTime()
			}
		} else {
			m.log().Warn("the saved catalog no longer verifies; check for updates again", "err", err)
		}
	}
	return nil
}

// Config returns the settings.
func (m *Manager) Config() Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// SetConfig validates and saves the settings. A new server or channel
// forgets the catalog of the old one.
func (m *Manager) SetConfig(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var pool *x509.CertPool
	if c.CA != "" {
		pool, _ = c.roots() // Validate parsed it
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := writeJSON(filepath.Join(m.Dir, configFile), c); err != nil {
		return err
	}
	if c != m.cfg {
		m.cat, m.checkedAt = nil, time.Time{}
		os.Remove(filepath.Join(m.Dir, catalogFile))
		os.Remove(filepath.Join(m.Dir, catalogSig))
	}
	m.cfg, m.roots = c, pool
	return nil
}

// Box describes this appliance to the catalog.
func (m *Manager) Box() catalog.Box {
	installed, names := m.Installed()
	var last map[kpkg.Kind]catalog.Installed
	if m.LastInstalls != nil {
		last = m.LastInstalls()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return catalog.Box{Serial: m.Serial, Channel: m.cfg.channel(), Hardware: m.Hardware,
		Installed: installed, Names: names, LastInstall: last, Now: m.now()}
}

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Manager) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.New(slog.DiscardHandler)
}

// roots is the pinned CA as a pool.
func (c Config) roots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	rest := []byte(c.CA)
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: a certificate does not parse: %v", err)
		}
		if !cert.IsCA {
			return nil, fmt.Errorf("ca: %q is not a certificate authority (its basic constraints say CA:FALSE); give the CA that issued the server's certificate", cert.Subject.CommonName)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("ca: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
	}
	return pool, nil
}

func (m *Manager) client() *http.Client {
	t := &http.Transport{
		Proxy:                 nil,
		ResponseHeaderTimeout: 30 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
	}
	c := &http.Client{Transport: t}
	if m.Client != nil {
		cc := *m.Client
		c = &cc
	} else {
		m.mu.Lock()
		pool := m.roots
		m.mu.Unlock()
		if pool != nil {
			t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	c.CheckRedirect = noDowngrade
	return c
}

// noDowngrade follows redirects, but never from https to plain http: that
// would hand the catalog and the packages to anyone on the path.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return fmt.Errorf("%w: %s redirected 10 times; fix the update server's address", ErrServer, via[0].URL)
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("%w: %s redirects to %s, from https to plain http, which the box does not follow; fix the server's redirect or its address", ErrServer, via[len(via)-1].URL, req.URL)
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("updates: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("updates: %s is damaged (%v); delete it to start over", path, err)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("updates: save %s: %w", filepath.Base(path), err)
	}
	return nil
}
