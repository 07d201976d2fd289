package webui

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/agent/access"
	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/audit"
	"keel.dev/keel/agent/backup"
	"keel.dev/keel/agent/certs"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/identity"
	"keel.dev/keel/agent/install"
	"keel.dev/keel/agent/peerkey"
	"keel.dev/keel/agent/users"
	"keel.dev/keel/agent/usersapi"
	"keel.dev/keel/agent/utilities"
)

const firstPassword = "first-boot-pass"

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// box is the agent's API server with the web interface mounted, as the
// agent mounts it, over TLS, with a real users store.
type box struct {
	srv      *httptest.Server
	ui       *UI
	users    *users.Store
	clock    *clock
	reboots  atomic.Int32
	statusOf api.Status
	audit    audit.Log // in memory
	certs    *certs.Store
	access   *access.Store
	peer     *peerkey.Store
	backups  *backup.Service
	failover *failover.Service
}

func newBox(t *testing.T, mustChange bool) *box {
	t.Helper()
	st, err := users.Open(filepath.Join(t.TempDir(), "users.json"), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Initialize(firstPassword, mustChange); err != nil {
		t.Fatal(err)
	}
	b := &box{users: st, clock: &clock{t: time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)}}
	b.statusOf.Base.Version, b.statusOf.Serial, b.statusOf.Hostname = "1.2.3", "KEEL-TEST-1", "box-1"
	b.statusOf.Certificate.SHA256 = "AB:CD"
	mc := st.MustChange
	sessions := &Sessions{Now: b.clock.Now}
	id, err := identity.LoadOrCreate(t.TempDir(), "KEEL-TEST-1", []string{"localhost"}, b.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b.certs, err = certs.Open(filepath.Join(t.TempDir(), "certs.json"), id.TLS, b.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	b.access = &access.Store{}
	b.access.Load()
	b.peer = &peerkey.Store{Path: filepath.Join(t.TempDir(), "peer.key")}
	a := api.New(api.Config{
		Allowed: b.access.Allowed,
		Refused: access.Refusal,
		Verify:  st.Verify, Known: st.Known, MustChange: mc,
		Status:  func() any { return b.statusOf },
		Reboot:  func() error { b.reboots.Add(1); return nil },
		Sleep:   func(context.Context, time.Duration) {},
		Session: sessions.Authenticate,
		Now:     b.clock.Now,
		Lockout: func() (int, time.Duration) { return st.Policy().Lockout() },
		Audit:   b.audit.Record,
	})
	usersapi.Routes{Store: st, EndSessions: sessions.EndUser, SetSessionTimeouts: sessions.SetTimeouts}.Register(a)
	b.audit.Routes(a)
	b.certs.Routes(a)
	b.access.Routes(a)
	b.peer.Routes(a)
	utilities.Routes(a, nil)
	cfgDir := t.TempDir()
	os.WriteFile(filepath.Join(cfgDir, "network.json"), []byte(`{"hostname":"box-1"}`), 0o600)
	b.backups = &backup.Service{
		Sections: func(bool) []backup.Section {
			return []backup.Section{{Name: "network", Kind: backup.Config, Path: filepath.Join(cfgDir, "network.json")}}
		},
		Key:      id.Key,
		Meta:     func() (string, string, *backup.App) { return "KEEL-TEST-1", "1.2.3", nil },
		StageDir: filepath.Join(cfgDir, "restore"), Dir: filepath.Join(cfgDir, "backup"),
	}
	b.backups.Routes(a)
	b.failover = &failover.Service{Dir: filepath.Join(cfgDir, "failover"), Serial: "KEEL-TEST-1", Cert: id.TLS,
		Key: b.peer.Key, Versions: func() failover.Versions { return failover.Versions{Base: "1.2.3"} }, Jobs: install.NewJobs(4)}
	if err := b.failover.Open(); err != nil {
		t.Fatal(err)
	}
	b.failover.Routes(a, a.HandlePublic, nil, nil)
	ui, err := New(Config{
		Sessions:   sessions,
		Login:      a.CheckLogin,
		MustChange: mc,
		Call:       a.Call,
		Do:         a.Do,
		Audit:      a.Audit,
		Status:     func() api.Status { return b.statusOf },
		Reboot:     func() error { b.reboots.Add(1); return nil },
		Shutdown:   func() error { return nil },
		Now:        b.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.HandlePublic(Prefix, ui)
	a.HandlePublic(Prefix+"/", ui)
	b.ui = ui
	b.srv = httptest.NewUnstartedServer(a.Handler())
	b.srv.TLS = &tls.Config{GetConfigForClient: b.certs.ConfigForClient}
	b.srv.StartTLS()
	// The box serves its own certificates, not httptest's.
	b.srv.Client().Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
	t.Cleanup(b.srv.Close)
	return b
}

// browser keeps one cookie, the session's, as a browser would, and does
// not follow redirects so the tests see them.
type browser struct {
	t      *testing.T
	b      *box
	cookie string
	origin string // sent as Origin on POSTs; "" for the box's own
}

func (b *box) browser(t *testing.T) *browser { return &browser{t: t, b: b} }

type answer struct {
	code     int
	body     string
	location string
	header   http.Header
}

func (br *browser) do(method, path string, form url.Values) answer {
	br.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, br.b.srv.URL+path, body)
	if err != nil {
		br.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost {
		origin := br.origin
		if origin == "" {
			origin = br.b.srv.URL
		}
		req.Header.Set("Origin", origin)
		req.Header.Set("Sec-Fetch-Site", map[bool]string{true: "same-origin", false: "cross-site"}[br.origin == ""])
	}
	if br.cookie != "" {
		req.AddCookie(&http.Cookie{Name: CookieName, Value: br.cookie})
	}
	c := br.b.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := c.Do(req)
	if err != nil {
		br.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, ck := range res.Cookies() {
		if ck.Name == CookieName {
			br.cookie = ck.Value
			if ck.MaxAge < 0 {
				br.cookie = ""
			}
		}
	}
	return answer{code: res.StatusCode, body: string(b), location: res.Header.Get("Location"), header: res.Header}
}

func (br *browser) login(password string) answer {
	return br.do("POST", Prefix+"/login", url.Values{"user": {"admin"}, "password": {password}})
}

var tokenRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// token reads the anti-forgery token from a page of the session.
func (br *browser) token() string {
	br.t.Helper()
	a := br.do("GET", Prefix+"/password", nil)
	m := tokenRE.FindStringSubmatch(a.body)
	if m == nil {
		br.t.Fatalf("no token on the page (%d): %s", a.code, a.body)
	}
	return m[1]
}

func TestLoginStartsANewSessionInAHostCookie(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	if a := br.do("GET", Prefix+"/status", nil); a.code != http.StatusSeeOther || a.location != Prefix+"/login" {
		t.Fatalf("status without a session: %d %s", a.code, a.location)
	}
	if a := br.login("wrong-password"); a.code != http.StatusUnauthorized || !strings.Contains(a.body, "the user name or the password is wrong") || br.cookie != "" {
		t.Fatalf("wrong password: %d cookie %q", a.code, br.cookie)
	}
	br.cookie = "a-cookie-an-attacker-planted"
	a := br.login(firstPassword)
	if a.code != http.StatusSeeOther || a.location != Prefix+"/status" {
		t.Fatalf("login: %d %s %s", a.code, a.location, a.body)
	}
	if len(br.cookie) != 32 || br.cookie == "a-cookie-an-attacker-planted" {
		t.Fatalf("session id %q: want a new 128-bit id", br.cookie)
	}
	set := a.header.Get("Set-Cookie")
	for _, want := range []string{CookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie %q lacks %s", set, want)
		}
	}
	if strings.Contains(set, "Domain=") {
		t.Errorf("a __Host- cookie names no domain: %q", set)
	}
	first := br.cookie
	br.login(firstPassword)
	if br.cookie == first {
		t.Error("a second login kept the session id")
	}
	a = br.do("GET", Prefix+"/status", nil)
	for _, want := range []string{"1.2.3", "KEEL-TEST-1", "box-1", "AB:CD"} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the Status page lacks %q", want)
		}
	}
	for h, want := range map[string]string{
		"Strict-Transport-Security": "max-age=31536000",
		"Content-Security-Policy":   "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "no-referrer",
	} {
		if !strings.Contains(a.header.Get(h), want) {
			t.Errorf("%s: %q, want %q", h, a.header.Get(h), want)
		}
	}
	if strings.Contains(a.body, "<script>") || strings.Contains(a.body, " style=") || strings.Contains(a.body, "onclick") {
		t.Error("the page has inline script or style, which the CSP refuses")
	}
}

// The first-boot password opens only the change, on pages and in the API.
func TestFirstBootPasswordMustBeChanged(t *testing.T) {
	b := newBox(t, true)
	br := b.browser(t)
	if a := br.login(firstPassword); a.location != Prefix+"/password" {
		t.Fatalf("login with the first-boot password went to %q", a.location)
	}
	if a := br.do("GET", Prefix+"/status", nil); a.code != http.StatusForbidden || !strings.Contains(a.body, "choose your own password first") {
		t.Fatalf("status page before the change: %d", a.code)
	}
	apiGet := func(password string) (int, string) {
		req, _ := http.NewRequest("GET", b.srv.URL+"/api/v1/status", nil)
		req.SetBasicAuth("admin", password)
		res, err := b.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var e api.Error
		json.NewDecoder(res.Body).Decode(&e)
		return res.StatusCode, e.Error
	}
	if code, msg := apiGet(firstPassword); code != http.StatusForbidden || msg != api.MustChangeMessage {
		t.Fatalf("API before the change: %d %q", code, msg)
	}
	tok := br.token()
	if a := br.do("POST", Prefix+"/password", url.Values{"csrf": {tok}, "current": {firstPassword}, "new": {"short"}, "again": {"short"}}); a.code != http.StatusBadRequest || !strings.Contains(a.body, "at least 8 characters") {
		t.Fatalf("short password: %d %s", a.code, a.body)
	}
	a := br.do("POST", Prefix+"/password", url.Values{"csrf": {tok}, "current": {firstPassword}, "new": {"my-own-password"}, "again": {"my-own-password"}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "your password was changed") {
		t.Fatalf("change: %d %s", a.code, a.body)
	}
	if a := br.do("GET", Prefix+"/status", nil); a.code != http.StatusOK {
		t.Errorf("status page after the change: %d", a.code)
	}
	if code, _ := apiGet("my-own-password"); code != http.StatusOK {
		t.Errorf("API after the change: %d", code)
	}
	if code, _ := apiGet(firstPassword); code != http.StatusUnauthorized {
		t.Errorf("the first-boot password still works: %d", code)
	}
}

func TestSessionTimeouts(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	b.clock.Advance(DefaultIdle - time.Second)
	if a := br.do("GET", Prefix+"/status", nil); a.code != http.StatusOK {
		t.Fatalf("just under the idle timeout: %d", a.code)
	}
	b.clock.Advance(DefaultIdle)
	if a := br.do("GET", Prefix+"/status", nil); a.code != http.StatusSeeOther {
		t.Fatalf("after the idle timeout: %d, want the login page", a.code)
	}
	// Busy all along, the session still ends 12 hours after the login.
	br.login(firstPassword)
	for range int(DefaultAbsolute / (10 * time.Minute)) {
		b.clock.Advance(10 * time.Minute)
		if a := br.do("GET", Prefix+"/status", nil); a.code != http.StatusOK {
			if b.clock.Now().Sub(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)) < DefaultAbsolute {
				t.Fatalf("ended early: %d", a.code)
			}
			return
		}
	}
	t.Fatal("a session in use outlived the absolute timeout")
}

func TestFormsNeedTheSessionsToken(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	for _, tok := range []string{"", "00112233445566778899aabbccddeeff"} {
		if a := br.do("POST", Prefix+"/power", url.Values{"csrf": {tok}, "action": {"reboot"}}); a.code != http.StatusForbidden {
			t.Errorf("token %q: %d", tok, a.code)
		}
	}
	// A page of another site, with the session's cookie and even its
	// token, is refused before the form is read.
	tok := br.token()
	br.origin = "https://attacker.example"
	if a := br.do("POST", Prefix+"/power", url.Values{"csrf": {tok}, "action": {"reboot"}}); a.code != http.StatusForbidden {
		t.Errorf("cross-origin POST: %d", a.code)
	}
	br.origin = ""
	if a := br.do("GET", Prefix+"/power?action=reboot", nil); a.code != http.StatusOK || b.reboots.Load() != 0 {
		t.Errorf("the confirmation page: %d, reboots %d (a GET must change nothing)", a.code, b.reboots.Load())
	}
	if a := br.do("POST", Prefix+"/power", url.Values{"csrf": {tok}, "action": {"reboot"}}); a.code != http.StatusAccepted {
		t.Errorf("confirmed reboot: %d %s", a.code, a.body)
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.reboots.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := b.reboots.Load(); n != 1 {
		t.Errorf("reboots %d, want 1", n)
	}
}

func TestLogoutAndPasswordChangeEndSessions(t *testing.T) {
	b := newBox(t, false)
	one, two := b.browser(t), b.browser(t)
	one.login(firstPassword)
	two.login(firstPassword)
	tok := one.token()
	if a := one.do("POST", Prefix+"/password", url.Values{"csrf": {tok}, "current": {firstPassword}, "new": {"another-password"}, "again": {"another-password"}}); a.code != http.StatusOK {
		t.Fatalf("change: %d", a.code)
	}
	if a := two.do("GET", Prefix+"/status", nil); a.code != http.StatusSeeOther {
		t.Errorf("the other browser's session outlived the password change: %d", a.code)
	}
	if a := one.do("GET", Prefix+"/status", nil); a.code != http.StatusOK {
		t.Errorf("the browser that changed it: %d", a.code)
	}
	old := one.cookie
	tok = one.token()
	if a := one.do("POST", Prefix+"/logout", url.Values{"csrf": {tok}}); a.code != http.StatusOK || one.cookie != "" {
		t.Errorf("logout: %d cookie %q", a.code, one.cookie)
	}
	one.cookie = old
	if a := one.do("GET", Prefix+"/status", nil); a.code != http.StatusSeeOther {
		t.Errorf("the logged-out id still opens pages: %d", a.code)
	}
	// Disabling or deleting a user will call the same EndUser.
	two.login("another-password")
	b.ui.Sessions.EndUser("admin")
	if a := two.do("GET", Prefix+"/status", nil); a.code != http.StatusSeeOther {
		t.Errorf("EndUser left a session: %d", a.code)
	}
}

func TestSessionsAreBounded(t *testing.T) {
	s := &Sessions{Max: 3}
	var ids []string
	for range 5 {
		ids = append(ids, s.New("admin").ID)
		time.Sleep(time.Millisecond)
	}
	if _, ok := s.Get(ids[0]); ok {
		t.Error("the oldest session outlived the bound")
	}
	if _, ok := s.Get(ids[4]); !ok {
		t.Error("the newest session is gone")
	}
}
