package updates

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"keel.dev/keel/agent/api"
)

// Routes registers the update endpoints (see the package documentation).
func (m *Manager) Routes(mux api.Mux) {
	mux.Handle("GET /api/v1/updates/config", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, m.Config())
	}))
	mux.Handle("PUT /api/v1/updates/config", http.HandlerFunc(m.putConfig))
	mux.Handle("POST /api/v1/updates/check", http.HandlerFunc(m.check))
	mux.Handle("GET /api/v1/updates", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, m.List())
	}))
	mux.Handle("POST /api/v1/updates/install", http.HandlerFunc(m.install))
	mux.Handle("GET /api/v1/updates/download-key", http.HandlerFunc(m.downloadKey))
	mux.Handle("GET /api/v1/updates/identity", http.HandlerFunc(m.identity))
}

func (m *Manager) putConfig(w http.ResponseWriter, r *http.Request) {
	var c Config
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		api.WriteError(w, http.StatusBadRequest, `The body must be {"server": URL, "channel": name}: `+err.Error())
		return
	}
	if err := m.SetConfig(c); err != nil {
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, m.Config())
}

func (m *Manager) check(w http.ResponseWriter, r *http.Request) {
	if err := m.Check(r.Context()); err != nil {
		api.WriteError(w, statusOf(err), err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, m.List())
}

func (m *Manager) install(w http.ResponseWriter, r *http.Request) {
	var req Request
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		msg := `The body must be {"name": ..., "version": ..., "ignore_wait": false}, or empty for the next update: ` + err.Error()
		if strings.Contains(err.Error(), `unknown field "force"`) {
			msg = `"force" is gone: use "ignore_wait": true to install before a package's wait is over (requirements and the version order still hold)`
		}
		api.WriteError(w, http.StatusBadRequest, msg)
		return
	}
	job, msg, err := m.Install(r.Context(), req, r.Context().Done())
	if err != nil {
		code := statusOf(err)
		if code == http.StatusInternalServerError && m.InstallStatus != nil {
			code = m.InstallStatus(err)
		}
		api.WriteJSON(w, code, api.Error{Error: err.Error(), Job: job})
		return
	}
	api.WriteJSON(w, http.StatusAccepted, api.Accepted{Job: job, Message: msg})
	http.NewResponseController(w).Flush()
}

func (m *Manager) downloadKey(w http.ResponseWriter, r *http.Request) {
	key, err := m.DownloadKey()
	if err != nil {
		api.WriteError(w, statusOf(err), err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(key)
}

func (m *Manager) identity(w http.ResponseWriter, r *http.Request) {
	pub, err := m.IdentityKey()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"serial": m.Serial, "public_key": pub})
}

// statusOf maps the package's errors to HTTP statuses; other errors come
// from the installer (see Manager.InstallStatus) or the appliance.
func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNoServer), errors.Is(err, ErrNoCatalog), errors.Is(err, ErrBlocked),
		errors.Is(err, ErrBusy), errors.Is(err, ErrClock):
		return http.StatusConflict
	case errors.Is(err, ErrRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrUnknown):
		return http.StatusNotFound
	case errors.Is(err, ErrServer):
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}
