// Package usersapi serves the users store (package users) over the JSON
// API: the accounts, the account policy, and password changes and resets.
// The web interface's Users page calls these same routes.
//
// # HTTP
//
//	GET    /api/v1/users                   200 {"users": [{"name", "disabled", "must_change"}]}
//	POST   /api/v1/users                   {"name", "password"} → 201 {"message"}; the user changes it at first login
//	POST   /api/v1/users/{name}/password   {"current", "new"} → 200 {"message"}: one's own password
//	POST   /api/v1/users/{name}/reset      {"password"} → 200 {"message"}: another's, changed at their next login
//	POST   /api/v1/users/{name}/disable    → 200 {"message"}
//	POST   /api/v1/users/{name}/enable     → 200 {"message"}
//	DELETE /api/v1/users/{name}            → 200 {"message"}
//	GET    /api/v1/account-policy          200 {"min_length", "lockout_threshold", "lockout_minutes", "session_idle_minutes", "session_absolute_minutes"}
//	PUT    /api/v1/account-policy          the same object → 200 {"message"}
//
// Refusals are {"error", "fields"}: 400 for an invalid name, password or
// setting, 403 for a wrong current password, 404 for an unknown user, 409
// for a change that would leave nobody able to log in or take one's own
// account.
package usersapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/users"
)

// Routes serves the store.
type Routes struct {
	Store *users.Store
	// EndSessions ends a user's web sessions: after a password change, a
	// reset, disabling or deleting. Optional.
	EndSessions func(user string)
	// SetSessionTimeouts applies a new policy's session timeouts.
	// Optional.
	SetSessionTimeouts func(idle, absolute time.Duration)
}

// List is GET /api/v1/users.
type List struct {
	Users []users.Account `json:"users"`
}

// Message is a change's answer.
type Message struct {
	Message string `json:"message"`
}

// NewUser is the body of POST /api/v1/users.
type NewUser struct {
	Name     string `json:"name"`
	Password string `json:"password"`
}

// PasswordChange is the body of POST /api/v1/users/{name}/password.
type PasswordChange struct {
	Current string `json:"current"`
	New     string `json:"new"`
}

// Reset is the body of POST /api/v1/users/{name}/reset.
type Reset struct {
	Password string `json:"password"`
}

// Register adds the routes to mux.
func (rt Routes) Register(mux api.Mux) {
	mux.Handle("GET /api/v1/users", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, List{Users: rt.Store.List()})
	}))
	mux.Handle("POST /api/v1/users", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req NewUser
		if !decode(w, r, &req, `{"name": "…", "password": "…"}`) {
			return
		}
		if !answer(w, rt.Store.Add(req.Name, req.Password), "password") {
			return
		}
		api.WriteJSON(w, http.StatusCreated, Message{"the user " + req.Name + " was added; they choose their own password when they first log in"})
	}))
	mux.Handle(api.PasswordRoute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if name != api.AuthenticatedUser(r.Context()) {
			api.WriteError(w, http.StatusForbidden, "you can change only your own password; to set another user's, reset it (POST /api/v1/users/"+name+"/reset)")
			return
		}
		var req PasswordChange
		if !decode(w, r, &req, `{"current": "…", "new": "…"}`) {
			return
		}
		code, msg := rt.Store.Change(name, req.Current, req.New)
		if code != http.StatusOK {
			api.WriteJSON(w, code, api.Error{Error: msg, Fields: passwordFields(code, msg)})
			return
		}
		rt.endSessions(name)
		api.WriteJSON(w, http.StatusOK, Message{"the password was changed; log in with the new one"})
	}))
	mux.Handle("POST /api/v1/users/{name}/reset", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if name == api.AuthenticatedUser(r.Context()) {
			api.WriteError(w, http.StatusConflict, "to change your own password, give the current one (POST /api/v1/users/"+name+"/password)")
			return
		}
		var req Reset
		if !decode(w, r, &req, `{"password": "…"}`) {
			return
		}
		if !answer(w, rt.Store.Reset(name, req.Password), "password") {
			return
		}
		rt.endSessions(name)
		api.WriteJSON(w, http.StatusOK, Message{"the password of " + name + " was reset; they choose a new one at their next login, and were logged out"})
	}))
	for _, st := range []struct {
		verb     string
		disabled bool
		said     string
	}{{"disable", true, "disabled and logged out"}, {"enable", false, "enabled"}} {
		mux.Handle("POST /api/v1/users/{name}/"+st.verb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			if !answer(w, rt.Store.SetDisabled(name, st.disabled, api.AuthenticatedUser(r.Context())), "") {
				return
			}
			if st.disabled {
				rt.endSessions(name)
			}
			api.WriteJSON(w, http.StatusOK, Message{"the user " + name + " was " + st.said})
		}))
	}
	mux.Handle("DELETE /api/v1/users/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !answer(w, rt.Store.Delete(name, api.AuthenticatedUser(r.Context())), "") {
			return
		}
		rt.endSessions(name)
		api.WriteJSON(w, http.StatusOK, Message{"the user " + name + " was deleted and logged out"})
	}))
	mux.Handle("GET /api/v1/account-policy", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, rt.Store.Policy())
	}))
	mux.Handle("PUT /api/v1/account-policy", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p users.Policy
		if !decode(w, r, &p, `{"min_length": 8, "lockout_threshold": 5, "lockout_minutes": 15, "session_idle_minutes": 15, "session_absolute_minutes": 720}`) {
			return
		}
		if !answer(w, rt.Store.SetPolicy(p), "") {
			return
		}
		if rt.SetSessionTimeouts != nil {
			rt.SetSessionTimeouts(p.Sessions())
		}
		api.WriteJSON(w, http.StatusOK, Message{"the account policy was saved; it applies from the next login, the session timeouts at once"})
	}))
}

func (rt Routes) endSessions(name string) {
	if rt.EndSessions != nil {
		rt.EndSessions(name)
	}
}

func decode(w http.ResponseWriter, r *http.Request, v any, shape string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		api.WriteError(w, http.StatusBadRequest, "send "+shape+" as JSON")
		return false
	}
	return true
}

// answer writes err's refusal, naming field for a password problem; it
// reports whether err was nil (or only the recovery copy failed).
func answer(w http.ResponseWriter, err error, field string) bool {
	code, msg := users.Answer(err)
	if code == http.StatusOK {
		return true
	}
	e := api.Error{Error: msg}
	var pe *users.PolicyError
	switch {
	case errors.As(err, &pe):
		e.Fields = []api.FieldError{{Field: pe.Field, Problem: pe.Problem}}
	case errors.Is(err, users.ErrInvalidName):
		e.Fields = []api.FieldError{{Field: "name", Problem: msg}}
	case code == http.StatusBadRequest && field != "":
		e.Fields = []api.FieldError{{Field: field, Problem: msg}}
	}
	api.WriteJSON(w, code, e)
	return false
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
