// Package inventory owns what is installed on the box: the base and
// application versions running now, and the history of installs (which
// package, when, by which path: an upload, a bundle or an online update)
// with the wait each one asks for before the next package of its kind.
// Every install path reports here, so the vendor guide's "24 hours
// between application packages" holds however a package arrived. No other
// package writes the install history.
//
// # HTTP
//
//	GET /api/v1/inventory  200 {"installed": [...], "history": [...]}
//
// installed lists each kind that is installed ({"kind", "name",
// "version"}, with "installed_at", "via", "wait" and "wait_until" when the
// history knows them); history lists installs newest first (at most
// MaxHistory): {"kind", "name", "version", "at", "via", "wait"}.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
)

// Via is the path a package took onto the box.
type Via string

// The install paths.
const (
	Upload Via = "upload" // POST /api/v1/install of one package
	Bundle Via = "bundle" // a package of an offline bundle
	Online Via = "online" // POST /api/v1/updates/install from the update server
)

// MaxHistory is how many installs the history keeps.
const MaxHistory = 100

// Record is one install.
type Record struct {
	Kind    kpkg.Kind     `json:"kind"`
	Name    string        `json:"name"`
	Version kpkg.Version  `json:"version"`
	At      time.Time     `json:"at"`
	Via     Via           `json:"via"`
	Wait    kpkg.Duration `json:"wait,omitempty"` // before the next package of its kind
}

// Running is a package the box runs now.
type Running struct {
	Name    string
	Version kpkg.Version
}

// Inventory is the box's inventory. Fill in the fields, then call Load;
// the fields must not change afterwards.
type Inventory struct {
	// Path is the history file on the data partition; empty keeps it in
	// memory (a box without data partition).
	Path string
	// Base and App return what the box runs now: the running base slot's
	// manifest, the committed application. ok is false for a kind that is
	// not installed.
	Base, App func() (Running, bool)
	Now       func() time.Time // nil: time.Now

	mu      sync.Mutex
	history []Record // oldest first
}

// Load reads the history; a missing file is an empty history.
func (inv *Inventory) Load() error {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.history = nil
	if inv.Path == "" {
		return nil
	}
	b, err := os.ReadFile(inv.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("install history: %w", err)
	}
	var f struct {
		History []Record `json:"history"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("install history %s is damaged (%v); waits between packages start again from the next install", inv.Path, err)
	}
	inv.history = f.History
	return nil
}

func (inv *Inventory) now() time.Time {
	if inv.Now != nil {
		return inv.Now()
	}
	return time.Now()
}

// Recorded notes that m was installed by via: an app package once its
// application is committed, a base package once its trial boot is
// staged. A history that cannot be saved is an error (the wait the
// package asks for would be forgotten at the next boot), but the record
// is kept in memory.
func (inv *Inventory) Recorded(m kpkg.Manifest, via Via) error {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.history = append(inv.history, Record{Kind: m.Kind, Name: m.Name, Version: m.Version, At: inv.now().UTC(), Via: via, Wait: m.Wait})
	if n := len(inv.history); n > MaxHistory {
		inv.history = slices.Clone(inv.history[n-MaxHistory:])
	}
	if inv.Path == "" {
		return nil
	}
	b, err := json.MarshalIndent(struct {
		History []Record `json:"history"`
	}{inv.history}, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.Write(inv.Path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("the install history could not be saved: %w", err)
	}
	return nil
}

// History returns the installs, newest first.
func (inv *Inventory) History() []Record {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	out := slices.Clone(inv.history)
	slices.Reverse(out)
	return out
}

// Installed returns the version and package name of each kind the box
// runs.
func (inv *Inventory) Installed() (map[kpkg.Kind]kpkg.Version, map[kpkg.Kind]string) {
	versions, names := map[kpkg.Kind]kpkg.Version{}, map[kpkg.Kind]string{}
	for k, f := range map[kpkg.Kind]func() (Running, bool){kpkg.KindBase: inv.Base, kpkg.KindApp: inv.App} {
		if f == nil {
			continue
		}
		if r, ok := f(); ok {
			versions[k], names[k] = r.Version, r.Name
		}
	}
	return versions, names
}

// Versions is Installed's versions alone.
func (inv *Inventory) Versions() map[kpkg.Kind]kpkg.Version {
	v, _ := inv.Installed()
	return v
}

// LastInstalls is the newest install of each kind, with its wait: what
// the catalog needs to hold the next package of that kind back.
func (inv *Inventory) LastInstalls() map[kpkg.Kind]catalog.Installed {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	out := map[kpkg.Kind]catalog.Installed{}
	for _, r := range inv.history {
		out[r.Kind] = catalog.Installed{Version: r.Version, At: r.At, Wait: time.Duration(r.Wait)}
	}
	return out
}

// Package is one kind installed, as GET /api/v1/inventory shows it.
type Package struct {
	Kind        kpkg.Kind     `json:"kind"`
	Name        string        `json:"name"`
	Version     kpkg.Version  `json:"version"`
	InstalledAt *time.Time    `json:"installed_at,omitempty"`
	Via         Via           `json:"via,omitempty"`
	Wait        kpkg.Duration `json:"wait,omitempty"`
	WaitUntil   *time.Time    `json:"wait_until,omitempty"` // the next package of its kind installs from then
}

// Report is GET /api/v1/inventory.
type Report struct {
	Installed []Package `json:"installed"`
	History   []Record  `json:"history"`
}

// Report says what is installed and how it came.
func (inv *Inventory) Report() Report {
	versions, names := inv.Installed()
	history := inv.History()
	rep := Report{Installed: []Package{}, History: history}
	for _, k := range []kpkg.Kind{kpkg.KindBase, kpkg.KindApp} {
		v, ok := versions[k]
		if !ok {
			continue
		}
		p := Package{Kind: k, Name: names[k], Version: v}
		for _, r := range history {
			if r.Kind == k && r.Version.Compare(v) == 0 {
				at := r.At
				p.InstalledAt, p.Via, p.Wait = &at, r.Via, r.Wait
				if r.Wait > 0 {
					until := at.Add(time.Duration(r.Wait))
					p.WaitUntil = &until
				}
				break
			}
		}
		rep.Installed = append(rep.Installed, p)
	}
	return rep
}

// Routes registers GET /api/v1/inventory.
func (inv *Inventory) Routes(mux api.Mux) {
	mux.Handle("GET /api/v1/inventory", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, inv.Report())
	}))
}
