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
	// A right password from a throttled client cannot be told from a
	// guess before it is hashed: it waits its turn too, and resets the
	// count. (Credentials that verified before skip the wait: Known.)
	if r := do(t, ts, http.MethodGet, "/api/v1/status", good); r.code != http.StatusOK {
		t.Fatalf("right password: %d %s", r.code, r.body)
	}
	if got := clock.takeSleeps(); !slices.Equal(got, ms(5000)) {
		t.Fatalf("success after 10 failures: delays %v, want [5s]", got)
	}
	if r := do(t, ts, http.MethodGet, "/api/v1/status", good); r.code != http.StatusOK {
		t.Fatalf("right password: %d %s", r.code, r.body)
	}
	if got := clock.takeSleeps(); len(got) != 0 {
		t.Fatalf("success after a success delayed: %v", got)
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

// fail counts one failed attempt of key and returns its count.
func fail(l *limiter, key netip.Addr) int {
	a, _ := l.begin(context.Background(), key)
	a.failed()
	return a.failures
}

func TestLimiterIsBounded(t *testing.T) {
	clock := newFakeClock()
	l := newLimiter(clock.Now, 100)
	addr := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("10.0.%d.%d", i/256, i%256)) }
	for i := range 1000 {
		fail(l, addr(i))
		if i == 0 {
			fail(l, addr(0))
		}
	}
	if n := l.len(); n != 100 {
		t.Fatalf("tracking %d clients, want 100", n)
	}
	// The oldest were forgotten, the newest kept.
	if n := fail(l, addr(0)); n != 1 {
		t.Errorf("oldest client still remembered (%d failures)", n)
	}
	if n := fail(l, addr(999)); n != 2 {
		t.Errorf("newest client forgotten (%d failures)", n)
	}
}

// Attempts are counted when they arrive: parallel connections get the
// free failures once, and once throttled a client's attempts are taken one
// at a time, so they do not multiply its guesses.
func TestThrottledAttemptsAreSerialised(t *testing.T) {
	clock := newFakeClock()
	l := newLimiter(clock.Now, 10)
	a := netip.MustParseAddr("192.0.2.1")
	other := netip.MustParseAddr("192.0.2.2")
	ctx := context.Background()

	// Three attempts in parallel are free; a fourth, still in parallel,
	// already waits its delay, and a fifth waits for the fourth.
	var free []*attempt
	for range freeFailures {
		at, _ := l.begin(ctx, a)
		if at.delay != 0 {
			t.Fatalf("attempt %d of a fresh client delayed %v", len(free)+1, at.delay)
		}
		free = append(free, at)
	}
	fourth, _ := l.begin(ctx, a)
	if fourth.delay != firstDelay {
		t.Fatalf("4th parallel attempt: delay %v, want %v", fourth.delay, firstDelay)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, ok := l.begin(short, a); ok {
		t.Fatal("5th attempt did not wait for the 4th")
	}
	at, _ := l.begin(ctx, other) // other clients are unaffected
	if at.delay != 0 {
		t.Fatalf("another client delayed %v", at.delay)
	}
	at.failed()
	for _, f := range free {
		f.failed()
	}
	done := make(chan *attempt)
	go func() { at, _ := l.begin(ctx, a); done <- at }()
	select {
	case <-done:
		t.Fatal("an attempt ran beside the throttled 4th")
	case <-time.After(50 * time.Millisecond):
	}
	fourth.failed()
	var next *attempt
	select {
	case next = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the turn was not passed on")
	}
	// 3 free + the 4th + the 5th that gave up waiting: the next is the 6th.
	if next.delay != delayAfter(6) {
		t.Errorf("after 5 failures: delay %v, want %v", next.delay, delayAfter(6))
	}
	next.succeeded()
	if l.len() != 1 {
		t.Errorf("success did not clear the record (%d clients)", l.len())
	}
}

// A throttled client gets only a few attempts waiting for the turn; the
// rest are refused at once and hold nothing.
func TestThrottledClientQueueIsBounded(t *testing.T) {
	l := newLimiter(newFakeClock().Now, 10)
	a := netip.MustParseAddr("192.0.2.1")
	for range freeFailures {
		fail(l, a)
	}
	first, _ := l.begin(context.Background(), a) // holds the turn
	ctx, cancel := context.WithCancel(context.Background())
	waiting := make(chan bool, maxWaitingPerClient)
	for range maxWaitingPerClient {
		go func() { _, ok := l.begin(ctx, a); waiting <- ok }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		n := l.clients[a].Value.(*client).waiting
		l.mu.Unlock()
		if n == maxWaitingPerClient {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d attempts waiting, want %d", n, maxWaitingPerClient)
		}
		time.Sleep(time.Millisecond)
	}
	if at, _ := l.begin(context.Background(), a); at != nil {
		t.Fatal("an attempt beyond the bound was queued")
	}
	cancel()
	for range maxWaitingPerClient {
		<-waiting
	}
	first.failed()
}

// An IPv6 client is its /64: a host that holds the prefix does not get
// fresh free failures from each of its addresses.
func TestIPv6ClientsAreCountedBy64(t *testing.T) {
	l := newLimiter(newFakeClock().Now, 10)
	for i := 1; i <= 4; i++ {
		key := clientKey(netip.MustParseAddr(fmt.Sprintf("2001:db8:1:2::%x", i)))
		if n := fail(l, key); n != i {
			t.Fatalf("address %d of the /64 has %d failures, want %d", i, n, i)
		}
	}
	if n := fail(l, clientKey(netip.MustParseAddr("2001:db8:1:3::1"))); n != 1 {
		t.Errorf("another /64 shares the count (%d)", n)
	}
	if k := clientKey(netip.MustParseAddr("::ffff:192.0.2.7")); k != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("a mapped IPv4 client is %v", k)
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
