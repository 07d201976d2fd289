package netcfg

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Mux is where Routes registers its handlers; the agent's API server
// (authenticated) and *http.ServeMux both fit.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Routes registers GET and PUT /api/v1/network.
func (m *Manager) Routes(mux Mux) {
	mux.Handle("GET /api/v1/network", http.HandlerFunc(m.getNetwork))
	mux.Handle("PUT /api/v1/network", http.HandlerFunc(m.putNetwork))
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
	res, err := m.Apply(c)
	var verr ValidationError
	switch {
	case errors.As(err, &verr):
		writeError(w, http.StatusBadRequest, verr.Error()+".", verr)
		return
	case err != nil:
		// Applied as far as it went and kept; the operator sees what
		// failed and can correct it.
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("The configuration was saved but not fully applied: %v.", err), nil)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		networkView
		Applied Result `json:"applied"`
	}{networkView{Config: m.Config(), Status: m.Status()}, res})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": msg}, with the field errors alongside when
// there are any so a UI can mark the fields.
func writeError(w http.ResponseWriter, code int, msg string, fields []FieldError) {
	body := map[string]any{"error": msg}
	if len(fields) > 0 {
		body["fields"] = fields
	}
	writeJSON(w, code, body)
}
