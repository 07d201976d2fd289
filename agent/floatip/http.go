package floatip

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	"keel.dev/keel/agent/api"
)

// Request is the body of the enable and disable endpoints.
type Request struct {
	Interface string `json:"interface"`
	Address   string `json:"address"` // CIDR, e.g. 192.0.2.100/24
	Force     bool   `json:"force,omitempty"`
}

// Routes registers POST /api/v1/network/floating/enable and .../disable.
// A conflict answers 409 with the owner's MAC in the error.
func (m *Manager) Routes(mux api.Mux) {
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
