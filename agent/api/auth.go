package api

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
)

type userKey struct{}

// AuthenticatedUser is the user name a request under Handle was
// authenticated as, or "".
func AuthenticatedUser(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

func (s *Server) requireAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, ok := s.authenticate(w, r)
		if !ok {
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	})
}

// authenticate checks Basic auth, answering 401 itself on failure. Every
// failure looks the same to the client: missing header, unknown user and
// wrong password get the same status, header and body.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	user, password, present := r.BasicAuth()
	if !present {
		// Not a guess, so not counted: browsers and scripts routinely ask
		// once without credentials before sending them.
		unauthorized(w)
		return "", false
	}
	// Credentials that verified before are checked by a MAC, without
	// hashing: the admin's scripts and pages pass at once however many
	// guesses are queued, also from the same address.
	key := clientKey(clientAddr(r))
	if s.cfg.Known != nil && s.cfg.Known(user, password) {
		return user, true
	}
	// End waiting early if the client goes away or the server shuts down.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()

	at, ok := s.limiter.begin(ctx, key)
	if at == nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusTooManyRequests, "too many failed logins from your address; wait a few seconds, then log in with the right password")
		return "", false
	}
	if !ok {
		unauthorized(w)
		return "", false
	}
	if at.delay > 0 {
		s.cfg.Sleep(ctx, at.delay)
	}
	if ctx.Err() != nil {
		at.failed()
		unauthorized(w)
		return "", false
	}
	good, err := s.hashing.do(ctx, func() bool { return s.cfg.Verify(user, password) })
	switch {
	case errors.Is(err, errBusy):
		at.abandoned()
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, "the appliance is checking too many logins at once (it may be under a password-guessing attack); try again in a few seconds")
		return "", false
	case err != nil: // the client went away
		at.failed()
		return "", false
	case good:
		at.succeeded()
		return user, true
	}
	at.failed()
	s.log.Warn("login failed", "client", key.String(), "user", truncate(user, 64), "consecutive_failures", at.failures, "delay", at.delay)
	unauthorized(w)
	return "", false
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
