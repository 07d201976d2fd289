package vmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/webui"
	"keel.dev/keel/qemu"
)

// checkFirstPasswordOpensOnlyItsChange: on a box that printed a first-boot
// password, it opens no API route but its own change.
func checkFirstPasswordOpensOnlyItsChange(t *testing.T, vm *qemu.VM) {
	t.Helper()
	first := FirstPassword(vm)
	if first == "" {
		t.Log("the image has a preseeded password; the first-boot change is not checked")
		return
	}
	code, body := API(t, vm, "GET", "/api/v1/status", first)
	var e api.Error
	json.Unmarshal(body, &e)
	if code != http.StatusForbidden || e.Error != api.MustChangeMessage {
		t.Errorf("status with the first-boot password: %d %s", code, body)
	}
}

// checkWebInterface logs in on the box's web interface as a browser does
// and reads the Status page.
func checkWebInterface(t *testing.T, vm *qemu.VM, pw string) {
	t.Helper()
	base := fmt.Sprintf("https://127.0.0.1:%d", vm.HTTPSPort())
	c := Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.Get(base + webui.Prefix + "/status")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != webui.Prefix+"/login" {
		t.Errorf("status page without a session: %d %s", res.StatusCode, res.Header.Get("Location"))
	}
	req, _ := http.NewRequest("POST", base+webui.Prefix+"/login", strings.NewReader(url.Values{"user": {"admin"}, "password": {pw}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	var session *http.Cookie
	for _, ck := range res.Cookies() {
		if ck.Name == webui.CookieName {
			session = ck
		}
	}
	if res.StatusCode != http.StatusSeeOther || session == nil || !session.Secure || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: %d, cookie %+v", res.StatusCode, session)
	}
	req, _ = http.NewRequest("GET", base+webui.Prefix+"/status", nil)
	req.AddCookie(session)
	res, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	st := GetStatus(t, vm, pw)
	for _, want := range []string{st.Base.Version, st.Serial, st.Certificate.SHA256, "base slot a (committed)"} {
		if res.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("the Status page (%d) lacks %q", res.StatusCode, want)
		}
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
}
