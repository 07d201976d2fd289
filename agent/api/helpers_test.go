package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

const (
	testUser     = "admin"
	testPassword = "correct-horse"
)

// fakeClock is a clock that only the fake sleeper moves.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Sleep(_ context.Context, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sleeps = append(c.sleeps, d)
	c.t = c.t.Add(d)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// takeSleeps returns and clears the recorded sleeps.
func (c *fakeClock) takeSleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sleeps
	c.sleeps = nil
	return s
}

func verify(user, password string) bool { return user == testUser && password == testPassword }

// testServer runs a server over TLS with a fake clock unless cfg says
// otherwise.
func testServer(t *testing.T, cfg Config) (*httptest.Server, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	if cfg.Verify == nil {
		cfg.Verify = verify
	}
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = clock.Sleep
	}
	ts := httptest.NewTLSServer(New(cfg).Handler())
	t.Cleanup(ts.Close)
	return ts, clock
}

type response struct {
	code   int
	header http.Header
	body   string
}

func do(t *testing.T, ts *httptest.Server, method, path string, auth func(*http.Request)) response {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != nil {
		auth(req)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(body)}
}

func basic(user, password string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, password) }
}

var (
	good = basic(testUser, testPassword)
	bad  = basic(testUser, "wrong")
)

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

var errTest = errors.New("the disk is on fire; call the fire brigade")
