package webui

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func (br *browser) loginAs(user, password string) answer {
	return br.do("POST", Prefix+"/login", url.Values{"user": {user}, "password": {password}})
}

// form posts a page's form with the session's token.
func (br *browser) form(path string, v url.Values) answer {
	br.t.Helper()
	v.Set("csrf", br.token())
	return br.do("POST", path, v)
}

func TestUsersPageAddsDisablesAndDeletesAccounts(t *testing.T) {
	b := newBox(t, false)
	admin := b.browser(t)
	admin.login(firstPassword)
	a := admin.form(Prefix+"/users", url.Values{"do": {"add"}, "name": {"ops"}, "password": {"ops-first-1"}, "again": {"ops-first-1"}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "the user ops was added") || !strings.Contains(a.body, "must choose a new password") {
		t.Fatalf("add: %d %s", a.code, a.body)
	}
	// The API's own refusal reaches the page as its sentence.
	a = admin.form(Prefix+"/users", url.Values{"do": {"add"}, "name": {"ops"}, "password": {"ops-first-2"}, "again": {"ops-first-2"}})
	if a.code != http.StatusConflict || !strings.Contains(a.body, "a user of that name exists already") {
		t.Fatalf("second add: %d %s", a.code, a.body)
	}
	a = admin.form(Prefix+"/users", url.Values{"do": {"disable"}, "name": {"admin"}})
	if a.code != http.StatusConflict || !strings.Contains(a.body, "the account you are logged in as") {
		t.Fatalf("disabling oneself: %d %s", a.code, a.body)
	}

	ops := b.browser(t)
	if a := ops.loginAs("ops", "ops-first-1"); a.code != http.StatusSeeOther || a.location != Prefix+"/password" {
		t.Fatalf("ops's first login: %d %s", a.code, a.location)
	}
	if a := ops.do("GET", Prefix+"/users", nil); a.code != http.StatusForbidden {
		t.Fatalf("ops opens Users before choosing a password: %d", a.code)
	}
	if a := ops.form(Prefix+"/password", url.Values{"current": {"ops-first-1"}, "new": {"ops-own-pass"}, "again": {"ops-own-pass"}}); a.code != http.StatusOK {
		t.Fatalf("ops's change: %d %s", a.code, a.body)
	}
	if a := ops.do("GET", Prefix+"/users", nil); a.code != http.StatusOK || !strings.Contains(a.body, "ops (you)") {
		t.Fatalf("ops's Users page: %d", a.code)
	}

	// Disabling ops ends ops's session at once.
	if a := admin.form(Prefix+"/users", url.Values{"do": {"disable"}, "name": {"ops"}}); a.code != http.StatusOK {
		t.Fatalf("disable: %d %s", a.code, a.body)
	}
	if a := ops.do("GET", Prefix+"/status", nil); a.code != http.StatusSeeOther || a.location != Prefix+"/login" {
		t.Fatalf("a disabled user's session goes on: %d %s", a.code, a.location)
	}
	if a := ops.loginAs("ops", "ops-own-pass"); a.code != http.StatusUnauthorized {
		t.Fatalf("a disabled user logs in: %d", a.code)
	}
	a = admin.form(Prefix+"/users", url.Values{"do": {"delete"}, "name": {"ops"}})
	if a.code != http.StatusBadRequest {
		t.Fatalf("delete without the confirmation tick: %d", a.code)
	}
	a = admin.form(Prefix+"/users", url.Values{"do": {"delete"}, "name": {"ops"}, "confirm": {"yes"}})
	if a.code != http.StatusOK || strings.Contains(a.body, "<td>ops") {
		t.Fatalf("delete: %d %s", a.code, a.body)
	}

	// Every change is in the audit log, with who and the outcome.
	a = admin.do("GET", Prefix+"/audit", nil)
	for _, want := range []string{"POST /api/v1/users", "POST /api/v1/users/ops/disable", "DELETE /api/v1/users/ops", "refused (409 Conflict)", "login (web)", "failed: wrong user name or password", "POST /api/v1/users/ops/password"} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the audit log lacks %q", want)
		}
	}
}

func TestPolicyChangesTheSessionTimeoutAndTheLockout(t *testing.T) {
	b := newBox(t, false)
	admin := b.browser(t)
	admin.login(firstPassword)
	a := admin.form(Prefix+"/users", url.Values{"do": {"policy"}, "min_length": {"10"}, "lockout_threshold": {"3"}, "lockout_minutes": {"5"}, "session_idle_minutes": {"20"}, "session_absolute_minutes": {"10"}})
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "session_absolute_minutes: use at least the idle timeout") {
		t.Fatalf("absolute below idle: %d", a.code)
	}
	a = admin.form(Prefix+"/users", url.Values{"do": {"policy"}, "min_length": {"10"}, "lockout_threshold": {"3"}, "lockout_minutes": {"5"}, "session_idle_minutes": {"2"}, "session_absolute_minutes": {"60"}})
	if a.code != http.StatusOK {
		t.Fatalf("policy: %d %s", a.code, a.body)
	}
	b.clock.Advance(2*time.Minute + time.Second)
	if a := admin.do("GET", Prefix+"/status", nil); a.code != http.StatusSeeOther {
		t.Fatalf("the new idle timeout did not end the session: %d", a.code)
	}

	// Three failures lock the account, even for its right password;
	// after the lockout it logs in again.
	if err := b.users.Add("ops", "ops-first-pass"); err != nil {
		t.Fatal(err)
	}
	guesser := b.browser(t)
	for range 3 {
		guesser.loginAs("ops", "wrong-password")
	}
	if a := guesser.loginAs("ops", "ops-first-pass"); a.code != http.StatusTooManyRequests || !strings.Contains(a.body, "locked") {
		t.Fatalf("a locked account: %d %s", a.code, a.body)
	}
	b.clock.Advance(5*time.Minute + time.Second)
	if a := guesser.loginAs("ops", "ops-first-pass"); a.code != http.StatusSeeOther {
		t.Fatalf("after the lockout: %d %s", a.code, a.body)
	}
}

func TestTheAPITakesTheSessionWithItsToken(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	token := br.token()
	call := func(method, path, tok string) int {
		req, _ := http.NewRequest(method, b.srv.URL+path, nil)
		req.AddCookie(&http.Cookie{Name: CookieName, Value: br.cookie})
		if tok != "" {
			req.Header.Set(TokenHeader, tok)
		}
		res, err := b.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if c := call("GET", "/api/v1/users", ""); c != http.StatusOK {
		t.Fatalf("GET with the session: %d", c)
	}
	if c := call("POST", "/api/v1/power/reboot", ""); c != http.StatusForbidden || b.reboots.Load() != 0 {
		t.Fatalf("a change with the cookie and no token: %d", c)
	}
	if c := call("POST", "/api/v1/power/reboot", "0123456789abcdef0123456789abcdef"); c != http.StatusForbidden {
		t.Fatalf("a change with a wrong token: %d", c)
	}
	if c := call("POST", "/api/v1/power/reboot", token); c != http.StatusAccepted {
		t.Fatalf("a change with the token: %d", c)
	}
	br.do("POST", Prefix+"/logout", url.Values{"csrf": {token}})
	if c := call("GET", "/api/v1/users", ""); c != http.StatusUnauthorized {
		t.Fatalf("GET after logout: %d", c)
	}
}
