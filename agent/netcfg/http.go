package netcfg

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"keel.dev/keel/agent/api"
)

// Routes registers GET and PUT /api/v1/network and
// POST /api/v1/network/confirm.
//
// A PUT that could cut off the client that made it (it changes the link
// the request arrived on, or the routing; see NeedsConfirm) answers 202
// with confirm_token and rollback_at instead of 200: the client must POST
// {"token": confirm_token} to /api/v1/network/confirm, over the network as
// it now is, before rollback_at or the previous configuration comes back.
func (m *Manager) Routes(mux api.Mux) {
	mux.Handle("GET /api/v1/network", http.HandlerFunc(m.getNetwork))
	mux.Handle("PUT /api/v1/network", http.HandlerFunc(m.putNetwork))
	mux.Handle("POST /api/v1/network/confirm", http.HandlerFunc(m.confirm))
}

type networkView struct {
	Config Config `json:"config"`
	Status Status `json:"status"`
}

func (m *Manager) getNetwork(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, networkView{Config: m.Config(), Status: m.Status()})
}

func (m *Manager) putNetwork(w http.ResponseWriter, r *http.Request) {
	var c Config
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("The body is not a network configuration: %v.", err), nil)
		return
	}
	answered := false
	res, _, err := m.ApplyFrom(c, localAddr(r), func(p *Pending) {
		// The change may take away the address this client came in on:
		// answer first, while the answer can still reach it, so that it
		// can confirm from wherever it reaches the box afterwards.
		writeJSON(w, http.StatusAccepted, struct {
			networkView
			*Pending
		}{networkView{Config: c, Status: m.Status()}, p})
		http.NewResponseController(w).Flush()
		answered = true
	})
	var verr ValidationError
	switch {
	case answered:
		// What failed, if anything, is in the status's last_error.
		if err != nil {
			m.log.Warn("network change awaiting confirmation not fully applied", "err", err)
		}
	case errors.As(err, &verr):
		writeError(w, http.StatusBadRequest, verr.Error()+".", []api.FieldError(verr))
	case err != nil:
		// Applied as far as it went and kept; the operator sees what
		// failed and can correct it.
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("The configuration was saved but not fully applied: %v.", err), nil)
	default:
		writeJSON(w, http.StatusOK, struct {
			networkView
			Applied Result `json:"applied"`
		}{networkView{Config: m.Config(), Status: m.Status()}, res})
	}
}

func (m *Manager) confirm(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Token string `json:"token"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || body.Token == "" {
		writeError(w, http.StatusBadRequest, `The body must be {"token": "<confirm_token from the PUT>"}.`, nil)
		return
	}
	err := m.Confirm(body.Token)
	switch {
	case errors.Is(err, ErrWrongToken):
		writeError(w, http.StatusForbidden, sentence(err), nil)
	case errors.Is(err, ErrNothingPending):
		writeError(w, http.StatusConflict, sentence(err), nil)
	case err != nil:
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("The configuration is kept but %v.", err), nil)
	default:
		writeJSON(w, http.StatusOK, networkView{Config: m.Config(), Status: m.Status()})
	}
}

// localAddr is the box's address the request arrived on; invalid when
// the server does not say (a test calling the handler directly).
func localAddr(r *http.Request) netip.Addr {
	a, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

func sentence(err error) string {
	s := err.Error()
	if s == "" {
		return s
	}
	if s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	if s[len(s)-1] != '.' {
		s += "."
	}
	return s
}

// writeJSON answers through the API's one JSON writer, so every endpoint
// sends the same headers.
func writeJSON(w http.ResponseWriter, code int, v any) { api.WriteJSON(w, code, v) }

// writeError answers {"error": msg}, with the field errors alongside when
// there are any so a UI can mark the fields.
func writeError(w http.ResponseWriter, code int, msg string, fields []api.FieldError) {
	writeJSON(w, code, api.Error{Error: msg, Fields: fields})
}
