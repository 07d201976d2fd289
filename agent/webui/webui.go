// Package webui serves the appliance's web interface under /appliance:
// server-rendered pages (html/template, embedded), server-side sessions in
// __Host- cookies, an anti-forgery token in every form, and the security
// headers of OWASP ASVS 5.0 level 2. Every action calls the same function
// the JSON API calls, and a page shows the API's sentence when it fails.
package webui

import (
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"keel.dev/keel/agent/api"
)

//go:embed templates/*.html static/*
var files embed.FS

// Prefix is where the interface lives.
const Prefix = "/appliance"

// CookieName is the session cookie. The __Host- prefix makes the browser
// take it only over HTTPS, for this host alone and for path /.
const CookieName = "__Host-keel-session"

// Config is what the interface needs from the agent.
type Config struct {
	Sessions *Sessions
	// Login checks credentials through the API's limiter and hashing
	// queue (api.Server.CheckLogin).
	Login      func(r *http.Request, user, password string) api.Login
	MustChange func(user string) bool
	Status     func() api.Status
	// Reboot and Shutdown are the API's power actions, called after the
	// page answering them was sent.
	Reboot, Shutdown func() error
	// Call runs a JSON API route as a user (api.Server.Call): the pages
	// make their changes through it.
	Call Caller
	// Do is api.Server.Do: a call with its own request, its answer
	// streamed (downloads, uploads with headers).
	Do func(w http.ResponseWriter, from *http.Request, user string, r *http.Request)
	// Audit records logins and logouts (api.Server.Audit); the API
	// records the changes itself.
	Audit func(r *http.Request, user, action, outcome string)
	Log   *slog.Logger
	Now   func() time.Time
}

// UI is the web interface.
type UI struct {
	cfg      Config
	Sessions *Sessions
	pagesMu  sync.Mutex
	pages    map[string]*template.Template // parsed as first drawn
	mux      *http.ServeMux
}

// New builds the routes; the pages are parsed as they are first drawn.
func New(cfg Config) (*UI, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sessions == nil {
		cfg.Sessions = &Sessions{Now: cfg.Now}
	}
	u := &UI{cfg: cfg, Sessions: cfg.Sessions, mux: http.NewServeMux()}
	u.routes()
	return u, nil
}

func (u *UI) routes() {
	u.mux.Handle("GET "+Prefix+"/static/", http.StripPrefix(Prefix, http.FileServerFS(files)))
	u.mux.HandleFunc("GET "+Prefix, u.home)
	u.mux.HandleFunc("GET "+Prefix+"/{$}", u.home)
	u.mux.HandleFunc("GET "+Prefix+"/login", u.loginPage)
	u.mux.HandleFunc("POST "+Prefix+"/login", u.login)
	u.mux.Handle("POST "+Prefix+"/logout", u.session(u.logout, allowMustChange))
	u.mux.Handle("GET "+Prefix+"/password", u.session(u.passwordPage, allowMustChange))
	u.mux.Handle("POST "+Prefix+"/password", u.session(u.password, allowMustChange))
	u.mux.Handle("GET "+Prefix+"/status", u.session(u.statusPage, 0))
	u.mux.Handle("GET "+Prefix+"/power", u.session(u.powerPage, 0))
	u.mux.Handle("POST "+Prefix+"/power", u.session(u.power, 0))
	u.mux.Handle("GET "+Prefix+"/users", u.session(u.usersPage, 0))
	u.mux.Handle("POST "+Prefix+"/users", u.session(u.usersAction, 0))
	u.mux.Handle("GET "+Prefix+"/audit", u.session(u.auditPage, 0))
	u.mux.Handle("GET "+Prefix+"/network", u.session(u.networkPage, 0))
	u.mux.Handle("POST "+Prefix+"/network", u.session(u.networkAction, 0))
	u.mux.Handle("POST "+Prefix+"/network/confirm", u.session(u.networkConfirm, 0))
	u.mux.Handle("POST "+Prefix+"/network/floating", u.session(u.floatingAction, 0))
	u.mux.Handle("GET "+Prefix+"/security", u.session(u.securityPage, 0))
	u.mux.Handle("POST "+Prefix+"/security", u.session(u.securityAction, 0))
	u.mux.Handle("POST "+Prefix+"/security/export", u.session(u.securityExport, 0))
	u.mux.Handle("GET "+Prefix+"/security/csr", u.session(u.securityCSR, 0))
	u.mux.Handle("GET "+Prefix+"/support", u.session(u.supportPage, 0))
	u.mux.Handle("POST "+Prefix+"/support", u.session(u.supportAction, 0))
	u.mux.Handle("POST "+Prefix+"/support/install", u.session(u.supportUpload, streamedForm))
	u.mux.Handle("GET "+Prefix+"/backup", u.session(u.backupPage, 0))
	u.mux.Handle("POST "+Prefix+"/backup", u.session(u.backupAction, 0))
	u.mux.Handle("POST "+Prefix+"/backup/download", u.session(u.backupDownload, 0))
	u.mux.Handle("POST "+Prefix+"/backup/restore", u.session(u.backupRestore, streamedForm))
	u.mux.Handle("POST "+Prefix+"/backup/restore-kept", u.session(u.backupRestoreKept, 0))
	u.mux.Handle("GET "+Prefix+"/failover", u.session(u.failoverPage, 0))
	u.mux.Handle("POST "+Prefix+"/failover", u.session(u.failoverAction, 0))
	u.mux.Handle("POST "+Prefix+"/failover/snapshot", u.session(u.failoverSnapshot, 0))
	u.mux.Handle("POST "+Prefix+"/reset", u.session(u.resetAction, 0))
}

// ServeHTTP answers every page with the security headers.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Strict-Transport-Security", "max-age=31536000")
	h.Set("Content-Security-Policy", "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	u.mux.ServeHTTP(w, r)
}

func (u *UI) home(w http.ResponseWriter, r *http.Request) {
	http.Redirect(w, r, Prefix+"/status", http.StatusSeeOther)
}
