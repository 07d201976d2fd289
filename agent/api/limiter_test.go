package api

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func ms(n ...int) []time.Duration {
	var d []time.Duration
	for _, v := range n {
		d = append(d, time.Duration(v)*time.Millisecond)
	}
	return d
}

func TestFailedLoginsAreSlowedDown(t *testing.T) {
	ts, clock := testServer(t, Config{})
	fail := func(n int) []time.Duration {
		t.Helper()
		for range n {
			if r := do(t, ts, http.MethodGet, "/api/v1/status", bad); r.code != http.StatusUnauthorized || r.body != authBody {
				t.Fatalf("wrong password: %d %q", r.code, r.body)
			}
		}
		return clock.takeSleeps()
	}
	if got := fail(3); len(got) != 0 {
		t.Fatalf("first 3 failures delayed: %v", got)
	}
	if got, want := fail(7), ms(250, 500, 1000, 2000, 4000, 5000, 5000); !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	// Requests without credentials are not guesses: answered at once and
	// not counted.
	if r := do(t, ts, http.MethodGet, "/api/v1/status", nil); r.code != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", r.code)
	}
	if got := clock.takeSleeps(); len(got) != 0 {
		t.Fatalf("request without credentials delayed: %v", got)
	}
	// A success is not delayed, and resets the count.
	if r := do(t, ts, http.MethodGet, "/api/v1/status", good); r.code != http.StatusOK {
		t.Fatalf("right password: %d %s", r.code, r.body)
	}
	if got := clock.takeSleeps(); len(got) != 0 {
		t.Fatalf("success delayed: %v", got)
	}
	if got := fail(4); !slices.Equal(got, ms(250)) {
		t.Fatalf("after a success: delays %v, want [250ms] on the 4th failure only", got)
	}
	// After a long quiet spell the client starts afresh.
	clock.Advance(forgetAfter + time.Second)
	if got := fail(4); !slices.Equal(got, ms(250)) {
		t.Fatalf("after %v quiet: delays %v, want [250ms]", forgetAfter, got)
	}
}

func TestLimiterIsBounded(t *testing.T) {
	clock := newFakeClock()
	l := newLimiter(clock.Now, 100)
	addr := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("10.0.%d.%d", i/256, i%256)) }
	for i := range 1000 {
		l.failed(addr(i))
		if i == 0 {
			l.failed(addr(0))
		}
	}
	if n := l.len(); n != 100 {
		t.Fatalf("tracking %d clients, want 100", n)
	}
	// The oldest were forgotten, the newest kept.
	if n, _ := l.failed(addr(0)); n != 1 {
		t.Errorf("oldest client still remembered (%d failures)", n)
	}
	if n, _ := l.failed(addr(999)); n != 2 {
		t.Errorf("newest client forgotten (%d failures)", n)
	}
}

// Once throttled, a client's attempts are taken one at a time, so parallel
// connections do not multiply its guesses.
func TestThrottledAttemptsAreSerialised(t *testing.T) {
	clock := newFakeClock()
	l := newLimiter(clock.Now, 10)
	a := netip.MustParseAddr("192.0.2.1")
	other := netip.MustParseAddr("192.0.2.2")
	ctx := context.Background()

	// Not yet throttled: no waiting.
	r1 := l.awaitTurn(ctx, a)
	r2 := l.awaitTurn(ctx, a)
	r1()
	r2()
	for range freeFailures {
		l.failed(a)
	}
	release := l.awaitTurn(ctx, a)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	l.awaitTurn(short, a)()
	if short.Err() == nil {
		t.Fatal("second attempt did not wait for the first")
	}
	l.awaitTurn(ctx, other)() // other clients are unaffected
	release()
	done := make(chan struct{})
	go func() { l.awaitTurn(ctx, a)(); close(done) }()
	waitFor(t, done, "the turn after release")

	l.succeeded(a)
	if l.len() != 0 {
		t.Error("success did not clear the record")
	}
}

func TestDelayAfter(t *testing.T) {
	want := map[int]time.Duration{1: 0, 3: 0, 4: 250 * time.Millisecond, 5: 500 * time.Millisecond, 8: 4 * time.Second, 9: 5 * time.Second, 1 << 30: 5 * time.Second}
	for n, d := range want {
		if got := delayAfter(n); got != d {
			t.Errorf("delayAfter(%d) = %v, want %v", n, got, d)
		}
	}
}
