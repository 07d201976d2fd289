package updates

import (
	"context"
	"fmt"
	"strings"

	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
)

// Request is what POST /api/v1/updates/install asks for. An empty name
// asks for the next update of the plan: the base first when base and app
// updates are both pending.
type Request struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// IgnoreWait installs before the wait the previous package of its
	// kind asked for is over; requirements, hardware and the version
	// order still hold (the catalog offers only newer versions).
	IgnoreWait bool `json:"ignore_wait"`
}

// Install downloads the requested update from the update server and runs
// it through the installer in one stream. A blocked update is refused with
// the reason, before any download.
func (m *Manager) Install(ctx context.Context, r Request, rebootAfter <-chan struct{}) (job, message string, err error) {
	e, err := m.pick(r)
	if err != nil {
		return "", "", err
	}
	m.mu.Lock()
	if m.installing {
		m.mu.Unlock()
		return "", "", fmt.Errorf("%w: wait until it is done (GET /api/v1/jobs)", ErrBusy)
	}
	m.installing = true
	server := m.cfg.Server
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.installing = false
		m.mu.Unlock()
	}()
	url := strings.TrimRight(server, "/") + "/" + e.File
	resumes := m.Resumes
	if resumes == 0 {
		resumes = DefaultResumes
	}
	d := newDownload(ctx, m.client(), url, e.Size, e.SHA256, resumes, m.log())
	defer d.Close()
	m.log().Info("installing update", "update", e.String(), "url", url, "ignore_wait", r.IgnoreWait)
	job, message, err = m.Installer(ctx, d, e, rebootAfter)
	if err == nil && d.tries > 0 {
		message = fmt.Sprintf("%s (the download resumed %d time(s))", message, d.tries)
	}
	return job, message, err
}

// pick finds the update a request names and checks it may install now.
func (m *Manager) pick(r Request) (catalog.Entry, error) {
	box := m.Box()
	m.mu.Lock()
	c, server := m.cat, m.cfg.Server
	m.mu.Unlock()
	if server == "" {
		return catalog.Entry{}, fmt.Errorf("%w: set the update server first (PUT /api/v1/updates/config)", ErrNoServer)
	}
	if c == nil {
		return catalog.Entry{}, fmt.Errorf("%w: check for updates first (POST /api/v1/updates/check)", ErrNoCatalog)
	}
	var opts []catalog.Option
	if r.IgnoreWait {
		opts = append(opts, catalog.IgnoreWait)
	}
	updates := c.Updates(box, opts...)
	if r.Name == "" {
		plan, err := c.Plan(box)
		if err != nil {
			return catalog.Entry{}, fmt.Errorf("%w: %v", ErrBlocked, err)
		}
		for _, u := range updates {
			if u.Entry.Kind == plan[0].Kind && u.Entry.Name == plan[0].Name && u.Entry.Version == plan[0].Version {
				if !u.Installable {
					return catalog.Entry{}, fmt.Errorf("%w: %s is next but %s", ErrBlocked, u.Entry, u.Reason)
				}
				return u.Entry, nil
			}
		}
		return catalog.Entry{}, fmt.Errorf("%w: %s is next but not offered to this appliance", ErrBlocked, plan[0])
	}
	v, err := kpkg.ParseVersion(r.Version)
	if err != nil {
		return catalog.Entry{}, fmt.Errorf("%w: version: %v", ErrRequest, err)
	}
	for _, u := range updates {
		if u.Entry.Name == r.Name && u.Entry.Version == v {
			if !u.Installable {
				return catalog.Entry{}, fmt.Errorf("%w: %s %s", ErrBlocked, u.Entry, u.Reason)
			}
			return u.Entry, nil
		}
	}
	return catalog.Entry{}, fmt.Errorf("%w: %s %s is not an update offered to this appliance by %s (installed: %s); check for updates again", ErrUnknown, r.Name, r.Version, server, installedList(box))
}

func installedList(b catalog.Box) string {
	var parts []string
	for _, k := range []kpkg.Kind{kpkg.KindBase, kpkg.KindApp} {
		if v, ok := b.Installed[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", k, v))
		}
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}
