package webui

import (
	"net/http"
	"net/url"
	"strconv"

	"keel.dev/keel/agent/users"
	"keel.dev/keel/agent/usersapi"
)

// usersView is the Users page: the accounts and the account policy.
type usersView struct {
	Users  []users.Account
	Policy users.Policy
}

func (u *UI) usersPage(w http.ResponseWriter, r *http.Request, ses Session) {
	u.renderUsers(w, r, ses, http.StatusOK, "", "")
}

func (u *UI) renderUsers(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed string) {
	v := &usersView{}
	var list usersapi.List
	if e := u.get(r, ses, "/api/v1/users", &list); e != "" && failed == "" {
		failed = e
	}
	v.Users = list.Users
	if e := u.get(r, ses, "/api/v1/account-policy", &v.Policy); e != "" && failed == "" {
		failed = e
	}
	u.render(w, code, "users", page{Session: &ses, Users: v, Message: msg, Error: failed})
}

// usersAction is every form of the Users page; "do" says which.
func (u *UI) usersAction(w http.ResponseWriter, r *http.Request, ses Session) {
	name := r.PostFormValue("name")
	esc := url.PathEscape(name)
	var a reply
	switch r.PostFormValue("do") {
	case "add":
		if r.PostFormValue("password") != r.PostFormValue("again") {
			u.renderUsers(w, r, ses, http.StatusBadRequest, "", "the two passwords differ; type the same one twice")
			return
		}
		a = u.call(r, ses, http.MethodPost, "/api/v1/users", usersapi.NewUser{Name: name, Password: r.PostFormValue("password")})
	case "reset":
		a = u.call(r, ses, http.MethodPost, "/api/v1/users/"+esc+"/reset", usersapi.Reset{Password: r.PostFormValue("password")})
	case "disable", "enable":
		a = u.call(r, ses, http.MethodPost, "/api/v1/users/"+esc+"/"+r.PostFormValue("do"), nil)
	case "delete":
		if r.PostFormValue("confirm") != "yes" {
			u.renderUsers(w, r, ses, http.StatusBadRequest, "", "tick “Yes, delete "+name+"” to delete the account")
			return
		}
		a = u.call(r, ses, http.MethodDelete, "/api/v1/users/"+esc, nil)
	case "policy":
		p, bad := policyForm(r)
		if bad != "" {
			u.renderUsers(w, r, ses, http.StatusBadRequest, "", bad)
			return
		}
		a = u.call(r, ses, http.MethodPut, "/api/v1/account-policy", p)
	default:
		u.renderUsers(w, r, ses, http.StatusBadRequest, "", "choose an action on the Users page")
		return
	}
	if !a.OK() {
		u.renderUsers(w, r, ses, a.Code, "", a.Sentence)
		return
	}
	u.renderUsers(w, r, ses, http.StatusOK, a.Sentence, "")
}

func policyForm(r *http.Request) (users.Policy, string) {
	var p users.Policy
	for _, f := range []struct {
		name, label string
		v           *int
	}{
		{"min_length", "Shortest password", &p.MinLength},
		{"lockout_threshold", "Failed logins before a lockout", &p.LockoutThreshold},
		{"lockout_minutes", "Lockout", &p.LockoutMinutes},
		{"session_idle_minutes", "Idle timeout", &p.SessionIdleMinutes},
		{"session_absolute_minutes", "Session length", &p.SessionAbsoluteMinutes},
	} {
		n, err := strconv.Atoi(r.PostFormValue(f.name))
		if err != nil {
			return p, f.label + ": type a whole number"
		}
		*f.v = n
	}
	return p, ""
}
