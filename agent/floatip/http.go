package floatip

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/netcfg"
)

// Request is the body of the enable and disable endpoints.
type Request struct {
	Interface string `json:"interface"`
	Address   string `json:"address"` // CIDR, e.g. 192.0.2.100/24
	Force     bool   `json:"force,omitempty"`
}

// Routes registers GET /api/v1/network/floating (the addresses held, and
// those a boot could not take back) and POST /api/v1/network/floating/
// enable and .../disable. A conflict answers 409 with the owner's MAC in
// the error. persist, when not nil, records the change in the network
// configuration (netcfg.Manager.SetShared), so a reboot takes the held
// addresses back; a change it cannot record is undone and answered 409
// or 500 with the reason.
func (m *Manager) Routes(mux api.Mux, persist func(link string, p netip.Prefix, enabled bool) error) {
	save := func(w http.ResponseWriter, req Request, p netip.Prefix, enabled bool) bool {
		if persist == nil {
			return true
		}
		err := persist(req.Interface, p, enabled)
		if err == nil {
			return true
		}
		// Undo, so the box holds what its configuration says.
		if enabled {
			m.Disable(req.Interface, p)
		} else {
			m.Enable(req.Interface, p, true)
		}
		code := http.StatusInternalServerError
		if errors.Is(err, netcfg.ErrPendingChange) {
			code = http.StatusConflict
		}
		writeError(w, code, sentence(fmt.Errorf("the change was undone: it could not be saved in the network configuration: %w", err)))
		return false
	}
	mux.Handle("GET /api/v1/network/floating", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]Address{"addresses": m.Status()})
	}))
	mux.Handle("POST /api/v1/network/floating/enable", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, p, ok := decode(w, r)
		if !ok {
			return
		}
		if err := m.Enable(req.Interface, p, req.Force); err != nil {
			var conflict *ConflictError
			if errors.As(err, &conflict) || errors.Is(err, ErrNotFloating) {
				writeError(w, http.StatusConflict, sentence(err))
				return
			}
			writeError(w, http.StatusInternalServerError, sentence(err))
			return
		}
		if !save(w, req, p, true) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"interface": req.Interface, "address": p.String(), "enabled": true})
	}))
	mux.Handle("POST /api/v1/network/floating/disable", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, p, ok := decode(w, r)
		if !ok {
			return
		}
		if m.Holds(req.Interface, p) && viaAddress(r, p.Addr()) {
			m.disableUnconfirmed(w, req, p, save)
			return
		}
		// Disable refuses an address it did not add; an absent one is fine.
		if err := m.Disable(req.Interface, p); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, ErrNotFloating) {
				code = http.StatusConflict
			}
			writeError(w, code, sentence(err))
			return
		}
		if !save(w, req, p, false) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"interface": req.Interface, "address": p.String(), "enabled": false})
	}))
	mux.Handle("POST /api/v1/network/floating/confirm", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Token string `json:"token"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil || body.Token == "" {
			writeError(w, http.StatusBadRequest, `The body must be {"token": "<confirm_token from the disable>"}.`)
			return
		}
		if !m.unconfirmed.confirm(body.Token) {
			writeError(w, http.StatusNotFound, "There is no disable waiting for that token: it was confirmed already, or its time ran out and the address was taken back.")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"confirmed": true})
	}))
}

func decode(w http.ResponseWriter, r *http.Request) (Request, netip.Prefix, bool) {
	var req Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("The body is not a floating-address request: %v.", err))
		return req, netip.Prefix{}, false
	}
	if req.Interface == "" {
		writeError(w, http.StatusBadRequest, "interface: is required.")
		return req, netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(req.Address)
	if err != nil || !p.Addr().IsGlobalUnicast() || p.Addr().Is4In6() {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("address: %q is not a unicast address in CIDR form (e.g. 192.0.2.100/24).", req.Address))
		return req, netip.Prefix{}, false
	}
	return req, p, true
}

func sentence(err error) string {
	s := err.Error()
	if s != "" && s[len(s)-1] != '.' {
		s += "."
	}
	return s
}

// writeJSON answers through the API's one JSON writer, so every endpoint
// sends the same headers.
func writeJSON(w http.ResponseWriter, code int, v any) { api.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

// disableUnconfirmed removes p, the address r came in on: the answer (202
// with confirm_token and rollback_at) is sent and flushed first, since
// the client cannot get it once the address is gone; unless confirmed in
// time, the address is taken back (forced: the box held it a moment ago)
// and saved again.
func (m *Manager) disableUnconfirmed(w http.ResponseWriter, req Request, p netip.Prefix, save func(http.ResponseWriter, Request, netip.Prefix, bool) bool) {
	timeout := m.ConfirmTimeout
	if timeout <= 0 {
		timeout = netcfg.DefaultConfirmTimeout
	}
	token := m.unconfirmed.start(timeout, func() {
		m.log.Warn("the floating address disable was not confirmed; taking the address back", "link", req.Interface, "addr", p)
		if err := m.Enable(req.Interface, p, true); err != nil {
			m.log.Error("the floating address could not be taken back", "link", req.Interface, "addr", p, "err", err)
			return
		}
		if !save(discardWriter{}, req, p, true) {
			m.log.Error("the floating address was taken back but not saved in the network configuration", "link", req.Interface, "addr", p)
		}
	})
	writeJSON(w, http.StatusAccepted, map[string]any{"interface": req.Interface, "address": p.String(), "enabled": false,
		"confirm_token": token, "rollback_at": time.Now().Add(timeout).UTC()})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if err := m.Disable(req.Interface, p); err != nil {
		m.log.Error("floating address disable failed", "err", err)
		return
	}
	if !save(discardWriter{}, req, p, false) {
		m.log.Error("the floating address disable could not be saved and was undone", "link", req.Interface, "addr", p)
	}
}

// discardWriter takes the answers of saves made after the client's
// answer was sent; their failures are logged by save's undo.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
