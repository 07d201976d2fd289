package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/agent/identity"
)

const authBody = `{"error":"authentication required"}` + "\n"

func TestUnauthorizedAnswersAreIdentical(t *testing.T) {
	ts, _ := testServer(t, Config{})
	cases := map[string]func(*http.Request){
		"no header":      nil,
		"wrong password": bad,
		"unknown user":   basic("root", testPassword),
		"empty":          basic("", ""),
		"not basic":      func(r *http.Request) { r.Header.Set("Authorization", "Bearer abc") },
		"malformed":      func(r *http.Request) { r.Header.Set("Authorization", "Basic !!!") },
	}
	for _, path := range []string{"/api/v1/status", "/api/v1/no-such-thing", "/api/v1/power/reboot"} {
		for name, auth := range cases {
			r := do(t, ts, http.MethodGet, path, auth)
			if r.code != http.StatusUnauthorized {
				t.Errorf("%s %s: status %d, want 401", path, name, r.code)
			}
			if got := r.header.Get("WWW-Authenticate"); got != `Basic realm="keel"` {
				t.Errorf("%s %s: WWW-Authenticate %q", path, name, got)
			}
			if r.body != authBody {
				t.Errorf("%s %s: body %q, want %q", path, name, r.body, authBody)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s %s: Content-Type %q", path, name, ct)
			}
			if ns := r.header.Get("X-Content-Type-Options"); ns != "nosniff" {
				t.Errorf("%s %s: X-Content-Type-Options %q", path, name, ns)
			}
		}
	}
}

func TestStatus(t *testing.T) {
	ts, _ := testServer(t, Config{Status: func() any {
		return map[string]any{"serial": "KEEL-0001", "slot": "A"}
	}})
	r := do(t, ts, http.MethodGet, "/api/v1/status", good)
	if r.code != http.StatusOK {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("%v: %s", err, r.body)
	}
	if got["serial"] != "KEEL-0001" || got["slot"] != "A" {
		t.Errorf("body %s", r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Error("status answer may be cached")
	}
	if r.header.Get("X-Content-Type-Options") != "nosniff" {
		t.Error("status answer may be sniffed")
	}
}

func TestUnencodableStatusIs500(t *testing.T) {
	ts, _ := testServer(t, Config{Status: func() any { return func() {} }})
	r := do(t, ts, http.MethodGet, "/api/v1/status", good)
	if r.code != http.StatusInternalServerError || !strings.Contains(r.body, `"error"`) {
		t.Errorf("got %d %s", r.code, r.body)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	ts, _ := testServer(t, Config{})
	for _, tc := range []struct {
		method, path string
		auth         func(*http.Request)
		code         int
		allow        string
	}{
		{"GET", "/api/v1/nope", good, 404, ""},
		{"GET", "/nope", nil, 404, ""},
		{"GET", "/", nil, 404, ""},
		{"POST", "/api/v1/status", good, 405, "GET, HEAD"},
		{"GET", "/api/v1/power/reboot", good, 405, "POST"},
		{"POST", "/healthz", nil, 405, "GET, HEAD"},
	} {
		r := do(t, ts, tc.method, tc.path, tc.auth)
		if r.code != tc.code {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, r.code, tc.code)
		}
		if r.header.Get("Allow") != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.path, r.header.Get("Allow"), tc.allow)
		}
		var e Error
		if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == "" {
			t.Errorf("%s %s: body %q is not a JSON error", tc.method, tc.path, r.body)
		}
	}
}

func TestHealthz(t *testing.T) {
	var healthErr atomic.Pointer[error]
	ts, _ := testServer(t, Config{Healthy: func() error {
		if p := healthErr.Load(); p != nil {
			return *p
		}
		return nil
	}})
	r := do(t, ts, http.MethodGet, "/healthz", nil)
	if r.code != http.StatusOK || r.body != "ok\n" {
		t.Errorf("healthy: %d %q", r.code, r.body)
	}
	healthErr.Store(&errTest)
	r = do(t, ts, http.MethodGet, "/healthz", nil)
	if r.code != http.StatusServiceUnavailable || r.body != `{"error":"`+errTest.Error()+`"}`+"\n" {
		t.Errorf("unhealthy: %d %q", r.code, r.body)
	}
}

func TestPower(t *testing.T) {
	for _, tc := range []struct{ path, state string }{
		{"/api/v1/power/reboot", "rebooting"},
		{"/api/v1/power/shutdown", "shutting down"},
	} {
		t.Run(tc.state, func(t *testing.T) {
			called := make(chan struct{}, 2)
			fail := atomic.Bool{}
			fn := func() error {
				called <- struct{}{}
				if fail.Load() {
					return errTest
				}
				return nil
			}
			srv := New(Config{Verify: verify, Reboot: fn, Shutdown: fn})
			ts, _ := testServer(t, Config{Reboot: fn, Shutdown: fn})

			// Through a recorder the request lives as long as we say: the
			// action must wait until the response is complete.
			ctx, cancel := context.WithCancel(context.Background())
			req := httptest.NewRequestWithContext(ctx, http.MethodPost, tc.path, nil)
			req.SetBasicAuth(testUser, testPassword)
			rec := httptest.NewRecorder()
			srv.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted || rec.Body.String() != `{"state":"`+tc.state+`"}`+"\n" {
				t.Fatalf("got %d %q", rec.Code, rec.Body)
			}
			select {
			case <-called:
				t.Fatal("power action ran before the request was over")
			case <-time.After(50 * time.Millisecond):
			}
			cancel()
			waitFor(t, called, "the power action")

			// Over TLS, with an action that fails: once it has failed the
			// operator may try again (until then: 409).
			fail.Store(true)
			r := do(t, ts, http.MethodPost, tc.path, good)
			if r.code != http.StatusAccepted {
				t.Fatalf("got %d %s", r.code, r.body)
			}
			waitFor(t, called, "the failing power action")
			deadline := time.Now().Add(5 * time.Second)
			for {
				r = do(t, ts, http.MethodPost, tc.path, good)
				if r.code == http.StatusAccepted {
					<-called
					break
				}
				if r.code != http.StatusConflict || time.Now().After(deadline) {
					t.Fatalf("after a failed action: %d %s, want 202 eventually", r.code, r.body)
				}
				time.Sleep(time.Millisecond)
			}
			if r := do(t, ts, http.MethodPost, tc.path, bad); r.code != http.StatusUnauthorized {
				t.Errorf("unauthenticated power request: %d", r.code)
			}
		})
	}
}

func TestPowerConflict(t *testing.T) {
	block := make(chan struct{})
	called := make(chan struct{}, 1)
	ts, _ := testServer(t, Config{Reboot: func() error { called <- struct{}{}; <-block; return nil }})
	defer close(block)
	if r := do(t, ts, http.MethodPost, "/api/v1/power/reboot", good); r.code != http.StatusAccepted {
		t.Fatalf("got %d", r.code)
	}
	waitFor(t, called, "reboot")
	if r := do(t, ts, http.MethodPost, "/api/v1/power/shutdown", good); r.code != http.StatusNotImplemented {
		t.Errorf("shutdown without a Shutdown func: %d, want 501", r.code)
	}
	if r := do(t, ts, http.MethodPost, "/api/v1/power/reboot", good); r.code != http.StatusConflict {
		t.Errorf("second reboot: %d %s, want 409", r.code, r.body)
	}
}

func TestHandleRequiresAuth(t *testing.T) {
	srv := New(Config{Verify: verify, Sleep: func(context.Context, time.Duration) {}})
	srv.Handle("GET /api/v1/whoami/{x}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"user": AuthenticatedUser(r.Context()), "x": r.PathValue("x")})
	}))
	ts := httptest.NewTLSServer(srv.Handler())
	defer ts.Close()
	if r := do(t, ts, http.MethodGet, "/api/v1/whoami/y", nil); r.code != http.StatusUnauthorized {
		t.Errorf("unauthenticated: %d", r.code)
	}
	if r := do(t, ts, http.MethodGet, "/api/v1/whoami/y", good); r.code != http.StatusOK || r.body != `{"user":"admin","x":"y"}`+"\n" {
		t.Errorf("authenticated: %d %s", r.code, r.body)
	}
}

func TestServeTLS(t *testing.T) {
	id, err := identity.LoadOrCreate(t.TempDir(), "KEEL-TEST", nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv := New(Config{Verify: verify})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln, id.TLS) }()

	roots := x509.NewCertPool()
	roots.AddCert(id.TLS.Leaf)
	client := func(maxVersion uint16) *http.Client {
		return &http.Client{Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: "localhost", MaxVersion: maxVersion},
			ForceAttemptHTTP2: true,
		}}
	}
	url := "https://" + ln.Addr().String()
	resp, err := client(0).Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("healthz over TLS: %d %q", resp.StatusCode, body)
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Error("not served over TLS 1.2+")
	}
	if _, err := client(tls.VersionTLS11).Get(url + "/healthz"); err == nil {
		t.Error("TLS 1.1 accepted")
	}
	if _, err := client(tls.VersionTLS12).Get(url + "/healthz"); err != nil {
		t.Errorf("TLS 1.2 refused: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
}

func TestServerTimeouts(t *testing.T) {
	srv := New(Config{})
	if srv.srv.ReadHeaderTimeout == 0 || srv.srv.IdleTimeout == 0 {
		t.Error("header and idle timeouts must be set")
	}
	if srv.srv.ReadTimeout != 0 || srv.srv.WriteTimeout != 0 {
		t.Error("whole-request timeouts would cut off large uploads")
	}
}

// Requests held back by the login limiter must not hold up Shutdown.
func TestShutdownCutsLoginDelays(t *testing.T) {
	id, err := identity.LoadOrCreate(t.TempDir(), "KEEL-TEST", nil, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	sleeping := make(chan struct{}, 10)
	srv := New(Config{Verify: verify, Sleep: func(ctx context.Context, d time.Duration) {
		sleeping <- struct{}{}
		<-ctx.Done()
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln, id.TLS)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	url := "https://" + ln.Addr().String() + "/api/v1/status"
	get := func() {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth(testUser, "wrong")
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	for range freeFailures {
		get()
	}
	go get()
	waitFor(t, sleeping, "a delayed login")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// A page of another site cannot make the admin's browser change the box:
// a cross-origin POST with valid credentials is refused before it runs,
// while the same POST from a script (no Origin) and a same-origin GET go
// through.
func TestCrossOriginRequestsAreRefused(t *testing.T) {
	called := make(chan struct{}, 4)
	ts, _ := testServer(t, Config{Shutdown: func() error { called <- struct{}{}; return nil }})
	from := func(origin, site string) func(*http.Request) {
		return func(r *http.Request) {
			r.SetBasicAuth(testUser, testPassword)
			if origin != "" {
				r.Header.Set("Origin", origin)
			}
			if site != "" {
				r.Header.Set("Sec-Fetch-Site", site)
			}
		}
	}
	if r := do(t, ts, "POST", "/api/v1/power/shutdown", from("https://evil.example", "cross-site")); r.code != http.StatusForbidden || !strings.Contains(r.body, "another site") {
		t.Errorf("cross-site POST: %d %s", r.code, r.body)
	}
	if r := do(t, ts, "POST", "/api/v1/power/shutdown", from("https://evil.example", "")); r.code != http.StatusForbidden {
		t.Errorf("cross-origin POST without Sec-Fetch-Site: %d %s", r.code, r.body)
	}
	select {
	case <-called:
		t.Fatal("a cross-origin request shut the box down")
	case <-time.After(100 * time.Millisecond):
	}
	if r := do(t, ts, "GET", "/api/v1/status", from("https://evil.example", "cross-site")); r.code != http.StatusOK {
		t.Errorf("cross-site GET: %d %s", r.code, r.body)
	}
	if r := do(t, ts, "POST", "/api/v1/power/shutdown", good); r.code != http.StatusAccepted {
		t.Errorf("a script's POST: %d %s", r.code, r.body)
	}
}

// A handler that panics answers 500 with a sentence, and the server goes
// on answering.
func TestHandlerPanicAnswers500(t *testing.T) {
	srv := New(Config{Verify: verify, Sleep: func(context.Context, time.Duration) {}})
	srv.Handle("GET /api/v1/boom", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("a bug in a handler")
	}))
	ts := httptest.NewTLSServer(srv.Handler())
	defer ts.Close()
	r := do(t, ts, http.MethodGet, "/api/v1/boom", good)
	if r.code != http.StatusInternalServerError || !strings.Contains(r.body, "internal error") {
		t.Fatalf("panicking handler: %d %s", r.code, r.body)
	}
	if r := do(t, ts, http.MethodGet, "/healthz", nil); r.code != http.StatusOK {
		t.Fatalf("after the panic /healthz: %d %s", r.code, r.body)
	}
}
