package api

import (
	"context"
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
	// End waiting early if the client goes away or the server shuts down.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.stopping, cancel)()

	client := clientAddr(r)
	release := s.limiter.awaitTurn(ctx, client)
	defer release()
	if ctx.Err() != nil {
		unauthorized(w)
		return "", false
	}
	if s.cfg.Verify(user, password) {
		s.limiter.succeeded(client)
		return user, true
	}
	failures, delay := s.limiter.failed(client)
	s.log.Warn("login failed", "client", client.String(), "user", truncate(user, 64), "consecutive_failures", failures, "delay", delay)
	if delay > 0 {
		s.cfg.Sleep(ctx, delay)
	}
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
