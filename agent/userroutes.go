package main

import (
	"encoding/json"
	"net/http"

	"keel.dev/keel/agent/api"
)

// passwordChange is the body of POST /api/v1/users/{name}/password.
type passwordChange struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// userRoutes registers the users' API. A password change ends the user's
// web sessions.
func (a *agent) userRoutes(mux api.Mux) {
	mux.Handle(api.PasswordRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if name != api.AuthenticatedUser(r.Context()) {
			api.WriteError(w, http.StatusForbidden, "you can change only your own password; log in as "+name+" to change theirs")
			return
		}
		var req passwordChange
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			api.WriteError(w, http.StatusBadRequest, `send {"current": "…", "new": "…"} as JSON`)
			return
		}
		if code, msg := a.users.Change(name, req.Current, req.New); code != http.StatusOK {
			api.WriteJSON(w, code, api.Error{Error: msg, Fields: passwordFields(code, msg)})
			return
		}
		if a.web != nil {
			a.web.Sessions.EndUser(name)
		}
		api.WriteJSON(w, http.StatusOK, map[string]string{"message": "the password was changed; log in with the new one"})
	}))
}

func passwordFields(code int, msg string) []api.FieldError {
	switch code {
	case http.StatusForbidden:
		return []api.FieldError{{Field: "current", Problem: msg}}
	case http.StatusBadRequest:
		return []api.FieldError{{Field: "new", Problem: msg}}
	}
	return nil
}
