// Package api serves the appliance's HTTPS JSON API under /api/v1/, every
// endpoint behind HTTP Basic auth, plus an unauthenticated /healthz.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// Config is what the server needs from the rest of the agent. Nil functions
// get safe defaults: Verify refuses everyone, Healthy reports healthy,
// Status reports {}, and Reboot/Shutdown answer 501.
type Config struct {
	Logger *slog.Logger
	Verify func(user, password string) bool // checks Basic auth credentials
	// Known says, cheaply and without hashing, that credentials verified
	// before; they skip the login limiter and the hashing queue. Optional.
	Known    func(user, password string) bool
	Status   func() any   // GET /api/v1/status, as JSON
	Reboot   func() error // POST /api/v1/power/reboot, called after the 202 is sent
	Shutdown func() error // POST /api/v1/power/shutdown, likewise
	Healthy  func() error // GET /healthz: nil is 200 "ok", else 503 with the error
	// MustChange says the user still has the first-boot password: until
	// it is changed, every authenticated route but PasswordRoute answers
	// 403 with a sentence. Optional.
	MustChange func(user string) bool
	Now        func() time.Time // for the failed-login limiter; default time.Now
	// Sleep delays the answer to a repeated failed login; it returns early
	// when ctx ends. Default: a timer. Tests inject a fake.
	Sleep func(ctx context.Context, d time.Duration)
	// Lockout is the account policy's lockout: after threshold
	// consecutive failures, an account's or an address's logins are
	// refused for the duration. Optional (no lockout).
	Lockout func() (threshold int, d time.Duration)
	// Session authenticates a request without Basic auth by the web
	// interface's session: its user, or "" and a sentence when the
	// session is there but the request may not use it (a change without
	// its token), or "" and "" when there is none. Optional.
	Session func(r *http.Request) (user, refusal string)
	// Audit records logins that failed and every change. Optional.
	Audit func(AuditEntry)
	// TLSForClient picks the certificate and TLS settings for each
	// connection (certs.Store.ConfigForClient). Optional: without it the
	// server serves the certificate given to Serve with TLS 1.2 and up.
	TLSForClient func(*tls.ClientHelloInfo) (*tls.Config, error)
	// Allowed says whether a client address may use the admin interface
	// (access.Store.Allowed): others get 403 with Refused, on every path
	// but /healthz. Optional (everyone).
	Allowed func(netip.Addr) bool
	Refused string
	// Refuse may refuse a change (any method but GET and HEAD) before
	// its handler runs, for a reason of the box's state (a failover
	// relationship): a status and a sentence, or 0 to let it through.
	// A refused upload is read to its end first, so its client sees the
	// answer. Optional.
	Refuse func(r *http.Request) (int, string)
}

// Server is the API server: a handler plus the http.Server running it.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	limiter *limiter
	locks   *lockouts
	hashing *hashGate
	origins *http.CrossOriginProtection
	srv     *http.Server
	cert    atomic.Pointer[tls.Certificate]

	// powering is set while a reboot or shutdown is underway, so a second
	// request does not start another one.
	powering atomic.Bool

	// stopping ends when Shutdown starts, so that requests held back by the
	// login limiter do not delay it.
	stopping context.Context
	stop     context.CancelFunc
}

// Timeouts for the http.Server. There is deliberately no ReadTimeout or
// WriteTimeout: later endpoints stream large uploads and downloads over slow
// links, and a whole-request deadline would cut them off.
const (
	readHeaderTimeout = 30 * time.Second // generous: TLS handshakes are slow under QEMU TCG
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
	// maxConns bounds open connections; maxStreams the requests one
	// HTTP/2 connection runs at once (Go's default is 250).
	maxConns   = 256
	maxStreams = 16
)

// New makes a server; call Serve to start it.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Verify == nil {
		cfg.Verify = func(string, string) bool { return false }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		mux:     http.NewServeMux(),
		limiter: newLimiter(cfg.Now, maxTrackedClients),
		locks:   newLockouts(cfg.Now),
		hashing: newHashGate(maxHashing, maxHashWaiting),
		origins: http.NewCrossOriginProtection(),
	}
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		TLSConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			GetCertificate:     s.getCertificate,
			GetConfigForClient: cfg.TLSForClient,
		},
		// Failed TLS handshakes (browsers meeting the self-signed
		// certificate, scanners) are routine: keep them out of the
		// operator's log unless debugging.
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.Handle("GET /api/v1/status", http.HandlerFunc(s.status))
	s.Handle("POST /api/v1/power/reboot", s.power("rebooting", s.cfg.Reboot))
	s.Handle("POST /api/v1/power/shutdown", s.power("shutting down", s.cfg.Shutdown))
}

// Handler returns the server's handler, for tests and for serving it some
// other way.
func (s *Server) Handler() http.Handler { return s }

// Handle registers h for pattern (http.ServeMux syntax, e.g.
// "POST /api/v1/users/{name}/password") behind Basic auth; h can get the
// user name with AuthenticatedUser. Register before Serve.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, s.requireAuth(h))
}

// HandlePublic registers h for pattern without Basic auth: for the web
// interface, which has its own login and sessions. It still gets the
// server's cross-origin check, headers and panic answer.
func (s *Server) HandlePublic(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
}

// Serve answers HTTPS (TLS 1.2 and later) on ln with cert until Shutdown,
// then returns http.ErrServerClosed.
func (s *Server) Serve(ln net.Listener, cert tls.Certificate) error {
	s.SetCertificate(cert)
	// A flood of connections waits in the kernel's backlog instead of
	// costing the agent a goroutine, a TLS handshake and buffers each.
	capped := newConnCap(ln, maxConns)
	s.srv.ConnState = capped.track
	s.srv.ConnContext = capped.connContext
	return s.srv.ServeTLS(capped, "", "")
}

// SetCertificate replaces the certificate for new connections, e.g. after
// the operator installs their own.
func (s *Server) SetCertificate(cert tls.Certificate) {
	s.cert.Store(&cert)
}

func (s *Server) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cert.Load()
	if c == nil {
		return nil, errors.New("api: no certificate set")
	}
	return c, nil
}

// Shutdown stops accepting connections and waits, up to ctx, for requests
// in flight to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	return s.srv.Shutdown(ctx)
}

// ServeHTTP routes a request. The mux's own 404 and 405 answers are plain
// text, so unmatched requests are answered here in JSON; under /api/v1/ only
// after authentication, so that probing does not reveal which endpoints
// exist.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	defer s.recoverHandler(w, r)
	if s.cfg.Allowed != nil && r.URL.Path != "/healthz" && r.Context().Value(internalKey{}) == nil && !s.cfg.Allowed(clientAddr(r)) {
		writeError(w, http.StatusForbidden, s.cfg.Refused)
		return
	}
	// A web page the admin visits must not make the browser send an
	// install or a shutdown with remembered credentials: a request that
	// changes state from another origin is refused. Scripts send no
	// Origin or Sec-Fetch-Site header and are not affected.
	if err := s.origins.Check(r); err != nil {
		writeError(w, http.StatusForbidden, "this request comes from a page of another site, and the appliance takes changes only from its own pages and from scripts; open the appliance's own address")
		return
	}
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	if isAPI(r.URL.Path) {
		if _, ok := s.authenticate(w, r); !ok {
			return
		}
	}
	// Let the mux tell 404 from 405 and compute Allow, then answer in JSON.
	var c headerCapture
	h.ServeHTTP(&c, r)
	if c.code == http.StatusMethodNotAllowed {
		allow := c.header.Get("Allow")
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "this endpoint does not accept "+r.Method+"; use "+allow)
		return
	}
	writeError(w, http.StatusNotFound, "there is no such endpoint; check the path against the API documentation")
}

// recoverHandler answers a handler's panic with a 500 and a sentence, and
// logs its stack: net/http would recover it too, but by cutting the
// connection, which tells the operator nothing. http.ErrAbortHandler is
// net/http's own way to cut a response and goes on up.
func (s *Server) recoverHandler(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	s.log.Error("request handler panicked; the agent goes on", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	writeError(w, http.StatusInternalServerError, "the appliance hit an internal error answering this request; it logged the details and goes on; try again, and send the logs to support if it repeats")
}

func isAPI(path string) bool {
	return path == "/api/v1" || len(path) >= len("/api/v1/") && path[:len("/api/v1/")] == "/api/v1/"
}

// headerCapture records the status and headers of the mux's fallback
// handlers and drops their plain-text body.
type headerCapture struct {
	header http.Header
	code   int
}

func (c *headerCapture) Header() http.Header {
	if c.header == nil {
		c.header = http.Header{}
	}
	return c.header
}
func (c *headerCapture) Write(b []byte) (int, error) { return len(b), nil }
func (c *headerCapture) WriteHeader(code int)        { c.code = code }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
