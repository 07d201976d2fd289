package reset

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"keel.dev/keel/agent/api"
)

// Body is POST /api/v1/factory-reset's body.
type Body struct {
	Mode Mode `json:"mode"`
	Then Then `json:"then"`
	// Confirm is the appliance's serial number, typed by the operator.
	Confirm string `json:"confirm"`
}

// Routes registers:
//
//	POST /api/v1/factory-reset         {"mode": "quick"|"secure", "then": "reboot"|"poweroff", "confirm": SERIAL} → 202 {"message"}; the box restarts and resets
//	GET  /api/v1/factory-reset/report  200 the last report, 404 when there was none
//
// restart restarts the box once the answer is sent.
func (s Store) Routes(mux api.Mux, serial string, restart func() error) {
	mux.Handle("POST /api/v1/factory-reset", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b Body
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&b); err != nil {
			api.WriteError(w, http.StatusBadRequest, `send {"mode": "quick" or "secure", "then": "reboot" or "poweroff", "confirm": "<the serial number>"} as JSON`)
			return
		}
		if b.Confirm != serial {
			api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: "type the appliance's serial number (" + serial + ") in confirm to reset it", Fields: []api.FieldError{{Field: "confirm", Problem: "it must be the serial number " + serial}}})
			return
		}
		if err := s.Ask(Request{Mode: b.Mode, Then: b.Then, Requested: time.Now().UTC(), By: api.AuthenticatedUser(r.Context())}); err != nil {
			api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: err.Error()})
			return
		}
		msg := "the appliance restarts and resets: its configuration, keys, certificates, users and application data go; it then boots as a new appliance with a new first-boot password on the serial console"
		if b.Then == PowerOff {
			msg = "the appliance restarts, resets, and powers off: its configuration, keys, certificates, users and application data go; the report stays on the ESP"
		}
		api.WriteJSON(w, http.StatusAccepted, map[string]string{"message": msg})
		http.NewResponseController(w).Flush()
		context.AfterFunc(r.Context(), func() { restart() })
	}))
	mux.Handle("GET /api/v1/factory-reset/report", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep, err := s.LastReport()
		if err != nil || rep == nil {
			api.WriteError(w, http.StatusNotFound, "this appliance has not been reset since its ESP was written")
			return
		}
		api.WriteJSON(w, http.StatusOK, rep)
	}))
}
