package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

type userKey struct{}

// internalKey marks a request the agent makes of itself (Call) for a user
// it has authenticated already; no client can set a context value.
type internalKey struct{}

// AuthenticatedUser is the user name a request under Handle was
// authenticated as, or "".
func AuthenticatedUser(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// PasswordRoute changes a user's own password; it is the one route open
// to a user who must change the first-boot password.
const PasswordRoute = "POST /api/v1/users/{name}/password"

// MustChangeMessage is the 403's sentence while the first-boot password
// is unchanged.
const MustChangeMessage = "the first-boot password works only to choose a new one: change it first (POST /api/v1/users/admin/password with {\"current\", \"new\"}, or log in at /appliance)"

func (s *Server) requireAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, ok := r.Context().Value(internalKey{}).(string)
		if !ok {
			if user, ok = s.authenticate(w, r); !ok {
				return
			}
		}
		if r.Pattern != PasswordRoute && s.cfg.MustChange != nil && s.cfg.MustChange(user) {
			writeError(w, http.StatusForbidden, MustChangeMessage)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), userKey{}, user))
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h.ServeHTTP(w, r)
			return
		}
		// Every change is audited with its outcome, however it came:
		// a script, the web interface's pages, or their scripts.
		sw := &statusWriter{ResponseWriter: w}
		if code, msg := s.refuse(r); code != 0 {
			if !ExpectsContinue(r) {
				DiscardBody(sw, r, Drain{})
			}
			writeError(sw, code, msg)
		} else {
			h.ServeHTTP(sw, r)
		}
		s.audit(r, user, r.Method+" "+r.URL.Path, outcome(sw.code))
	})
}

func (s *Server) refuse(r *http.Request) (int, string) {
	if s.cfg.Refuse == nil {
		return 0, ""
	}
	return s.cfg.Refuse(r)
}

// outcome is an audit entry's result for an HTTP status.
func outcome(code int) string {
	switch {
	case code == 0 || code < 300:
		return "ok"
	case code == http.StatusAccepted:
		return "accepted"
	default:
		return "refused (" + strconv.Itoa(code) + " " + http.StatusText(code) + ")"
	}
}

func (s *Server) audit(r *http.Request, user, action, result string) {
	if s.cfg.Audit == nil {
		return
	}
	s.cfg.Audit(AuditEntry{Time: s.cfg.Now().UTC(), User: truncate(user, 64), Client: clientAddr(r).String(), Action: action, Outcome: result})
}

// Audit records an event the API does not see itself, such as a web
// login, with the request's client.
func (s *Server) Audit(r *http.Request, user, action, result string) {
	s.audit(r, user, action, result)
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes of
// streamed answers).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authenticate checks Basic auth, or else the web interface's session
// (Config.Session), answering 401 itself on failure. Every failure of
// Basic auth looks the same to the client: missing header, unknown user
// and wrong password get the same status, header and body.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	user, password, present := r.BasicAuth()
	if !present && s.cfg.Session != nil {
		if user, msg := s.cfg.Session(r); user != "" {
			LoggedIn(r)
			return user, true
		} else if msg != "" {
			writeError(w, http.StatusForbidden, msg)
			return "", false
		}
	}
	if !present {
		// Not a guess, so not counted: browsers and scripts routinely ask
		// once without credentials before sending them.
		unauthorized(w)
		return "", false
	}
	res := s.CheckLogin(r, user, password)
	if !res.OK {
		res.Answer(w)
		return "", false
	}
	return user, true
}

// Login is the outcome of CheckLogin.
type Login struct {
	OK bool
	// Code, RetryAfter and Message answer a refusal: 401 for wrong
	// credentials, 429 or 503 (with Retry-After) when the limiter or the
	// hashing queue refused to check them; Code 0 when the client went
	// away.
	Code       int
	RetryAfter string
	Message    string
	// Locked says the account or the address is locked out.
	Locked bool
}

// Answer writes the refusal as the JSON API does.
func (l Login) Answer(w http.ResponseWriter) {
	switch {
	case l.Code == 0:
	case l.Code == http.StatusUnauthorized:
		unauthorized(w)
	default:
		if l.RetryAfter != "" {
			w.Header().Set("Retry-After", l.RetryAfter)
		}
		writeError(w, l.Code, l.Message)
	}
}

var wrongCredentials = Login{Code: http.StatusUnauthorized, Message: "the user name or the password is wrong"}

// CheckLogin checks credentials for r's client through the same failed-
// login limiter and hashing queue as Basic auth: the web interface's login
// form uses it, so a flood of guesses through either slows both alike.
func (s *Server) CheckLogin(r *http.Request, user, password string) Login {
	// Credentials that verified before are checked by a MAC, without
	// hashing: the admin's scripts and pages pass at once however many
	// guesses are queued, also from the same address.
	key := clientKey(clientAddr(r))
	if s.cfg.Known != nil && s.cfg.Known(user, password) {
		LoggedIn(r)
		return Login{OK: true}
	}
	threshold, lockFor := 0, time.Duration(0)
	if s.cfg.Lockout != nil {
		threshold, lockFor = s.cfg.Lockout()
	}
	addrKey, userKey := "addr "+key.String(), "user "+truncate(user, 64)
	if threshold > 0 {
		if left := s.locks.left(userKey, threshold, lockFor); left > 0 && !s.locks.isTrusted(user, key.String()) {
			s.audit(r, user, "login", "refused: account locked")
			return lockedOut("this account", left)
		}
		if left := s.locks.left(addrKey, threshold, lockFor); left > 0 {
			s.audit(r, user, "login", "refused: address locked")
			return lockedOut("your address", left)
		}
	}
	fail := func() {
		if threshold > 0 {
			s.locks.failed(userKey, lockFor)
			s.locks.failed(addrKey, lockFor)
		}
		s.audit(r, user, "login", "failed: wrong user name or password")
	}
	// End waiting early if the client goes away or the server shuts down.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()

	at, ok := s.limiter.begin(ctx, key)
	if at == nil {
		return Login{Code: http.StatusTooManyRequests, RetryAfter: "5", Message: "too many failed logins from your address; wait a few seconds, then log in with the right password"}
	}
	if !ok {
		return wrongCredentials
	}
	if at.delay > 0 {
		s.cfg.Sleep(ctx, at.delay)
	}
	if ctx.Err() != nil {
		at.failed()
		fail()
		return wrongCredentials
	}
	good, err := s.hashing.do(ctx, func() bool { return s.cfg.Verify(user, password) })
	switch {
	case errors.Is(err, errBusy):
		at.abandoned()
		return Login{Code: http.StatusServiceUnavailable, RetryAfter: "2", Message: "the appliance is checking too many logins at once (it may be under a password-guessing attack); try again in a few seconds"}
	case err != nil: // the client went away
		at.failed()
		return Login{}
	case good:
		at.succeeded()
		s.locks.succeeded(userKey)
		s.locks.succeeded(addrKey)
		s.locks.trust(user, key.String())
		LoggedIn(r)
		return Login{OK: true}
	}
	at.failed()
	fail()
	s.log.Warn("login failed", "client", key.String(), "user", truncate(user, 64), "consecutive_failures", at.failures, "delay", at.delay)
	return wrongCredentials
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="keel"`)
	writeError(w, http.StatusUnauthorized, "authentication required")
}

// clientAddr is the peer's IP address. No proxy sits in front of the agent,
// so forwarding headers are attacker-controlled and ignored.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{} // all unparseable peers share one entry
	}
	return ap.Addr().Unmap()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ClientAddr is the address of the client that sent r.
func ClientAddr(r *http.Request) netip.Addr { return clientAddr(r) }
