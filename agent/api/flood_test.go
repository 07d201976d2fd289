package api

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/agent/users"
)

// call runs one request through the server's handler as if from addr.
func call(srv *Server, ctx context.Context, addr, user, password string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, http.MethodGet, "/api/v1/status", nil)
	req.RemoteAddr = addr
	req.SetBasicAuth(user, password)
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec
}

// 500 wrong passwords at once from 500 addresses, with the real argon2id
// store: the admin, whose credentials verified before the flood, is
// answered at once, from a fresh address and from one of the attackers';
// no more than maxHashing checks run at once and the overflow is told to
// come back (503 with Retry-After) instead of queueing.
func TestLoginFloodFromManyAddresses(t *testing.T) {
	store, err := users.Open(filepath.Join(t.TempDir(), "users.json"), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Initialize("Adm1n-correct-horse", false); err != nil {
		t.Fatal(err)
	}
	var running, most, checks atomic.Int32
	verify := func(u, p string) bool {
		checks.Add(1)
		n := running.Add(1)
		defer running.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		return store.Verify(u, p)
	}
	srv := New(Config{Verify: verify, Known: store.Known, Status: func() any { return "ok" }})
	if rec := call(srv, context.Background(), "192.0.2.1:4000", users.Admin, "Adm1n-correct-horse"); rec.Code != http.StatusOK {
		t.Fatalf("admin before the flood: %d %s", rec.Code, rec.Body)
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	retryAfter := true
	start := make(chan struct{})
	for i := range 500 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rec := call(srv, context.Background(), fmt.Sprintf("10.1.%d.%d:5000", i/250, i%250+1), users.Admin, fmt.Sprintf("guess-%d", i))
			mu.Lock()
			codes[rec.Code]++
			if rec.Code == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") == "" {
				retryAfter = false
			}
			mu.Unlock()
		}()
	}
	close(start)
	time.Sleep(20 * time.Millisecond) // the flood is queued
	for _, addr := range []string{"198.51.100.9:6000", "10.1.0.1:6001"} {
		t0 := time.Now()
		rec := call(srv, context.Background(), addr, users.Admin, "Adm1n-correct-horse")
		if d := time.Since(t0); rec.Code != http.StatusOK || d > 2*time.Second {
			t.Errorf("admin from %s during the flood: %d after %v, want 200 within 2 s", addr, rec.Code, d)
		}
	}
	wg.Wait()
	t.Logf("answers to the flood: %v; password checks %d, at most %d at once", codes, checks.Load(), most.Load())
	if codes[http.StatusOK] != 0 {
		t.Errorf("%d guesses passed", codes[http.StatusOK])
	}
	if codes[http.StatusServiceUnavailable] == 0 || !retryAfter {
		t.Errorf("no guess was turned away with 503 and Retry-After: the hashing queue is not bounded (%v)", codes)
	}
	if m := most.Load(); m > maxHashing {
		t.Errorf("%d password checks ran at once, want at most %d", m, maxHashing)
	}
	// One check was the admin's before the flood.
	if c := checks.Load() - 1; c > 500-int32(codes[http.StatusServiceUnavailable]) {
		t.Errorf("%d checks for the %d guesses that were not turned away", c, 500-codes[http.StatusServiceUnavailable])
	}
}

// A guess whose client left while it waited for a password check is
// dropped without hashing.
func TestQueuedLoginOfDepartedClientIsDropped(t *testing.T) {
	release := make(chan struct{})
	var checks atomic.Int32
	srv := New(Config{Verify: func(u, p string) bool {
		checks.Add(1)
		<-release
		return false
	}})
	var wg sync.WaitGroup
	// Fill the running slots.
	for i := range maxHashing {
		wg.Add(1)
		go func() {
			defer wg.Done()
			call(srv, context.Background(), fmt.Sprintf("10.2.0.%d:1", i+1), "admin", "x")
		}()
	}
	for checks.Load() < maxHashing {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 10 {
		wg.Add(1)
		go func() { defer wg.Done(); call(srv, ctx, fmt.Sprintf("10.3.0.%d:1", i+1), "admin", "x") }()
	}
	time.Sleep(50 * time.Millisecond) // queued
	cancel()
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := checks.Load(); n != maxHashing {
		t.Errorf("%d passwords checked; the %d guesses whose clients left should not have been", n, 10)
	}
}
