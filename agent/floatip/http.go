package floatip

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

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
			if errors.As(err, &conflict) {
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
		if err := m.Disable(req.Interface, p); err != nil {
			writeError(w, http.StatusInternalServerError, sentence(err))
			return
		}
		if !save(w, req, p, false) {
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"interface": req.Interface, "address": p.String(), "enabled": false})
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
