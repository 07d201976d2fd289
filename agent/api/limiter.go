package api

import (
	"container/list"
	"context"
	"net/netip"
	"sync"
	"time"
)

// Failed-login throttling, per client (an IPv4 address or an IPv6 /64).
const (
	freeFailures      = 3                      // consecutive failures answered at once
	firstDelay        = 250 * time.Millisecond // the delay before the 4th attempt, doubling after
	maxDelay          = 5 * time.Second
	forgetAfter       = 15 * time.Minute // a quiet client starts afresh
	maxTrackedClients = 1024             // beyond this the least recently seen is forgotten
	// maxWaitingPerClient bounds a throttled client's attempts waiting
	// for their turn; more are refused at once (429), so a flood from one
	// address holds no connections open for minutes.
	maxWaitingPerClient = 4
)

// limiter slows down password guessing. An attempt is counted when it
// arrives, before its password is hashed, so parallel connections cannot
// slip past the count. Once a client has freeFailures failures (or
// attempts still running) each further attempt waits for the previous one
// and then a delay that doubles up to maxDelay, before it costs any
// hashing. A success clears the client's record.
type limiter struct {
	now func() time.Time
	max int

	mu      sync.Mutex
	clients map[netip.Addr]*list.Element // of *client
	order   *list.List                   // most recently seen first
}

type client struct {
	key      netip.Addr
	failures int
	inflight int // attempts counted and not yet decided
	waiting  int // throttled attempts waiting for the turn
	last     time.Time
	turn     chan struct{} // holds a token while a throttled attempt is in progress
}

func newLimiter(now func() time.Time, max int) *limiter {
	return &limiter{now: now, max: max, clients: map[netip.Addr]*list.Element{}, order: list.New()}
}

// clientKey is who the limiter counts: an IPv4 address, or an IPv6 /64
// (one host usually holds a whole /64, so its single addresses are free).
func clientKey(addr netip.Addr) netip.Addr {
	addr = addr.Unmap()
	if addr.Is6() {
		p, err := addr.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return addr
}

// attempt is one login attempt counted by the limiter; exactly one of
// succeeded, failed and abandoned ends it.
type attempt struct {
	l         *limiter
	c         *client
	throttled bool
	// delay is how long to wait before checking the password.
	delay time.Duration
	// failures is the client's count including this attempt, if it fails.
	failures int
}

// begin counts an attempt of key. A throttled client's attempt first
// waits until no other attempt of it runs, or ctx ends (then ok is false),
// unless too many wait already (then a is nil).
func (l *limiter) begin(ctx context.Context, key netip.Addr) (a *attempt, ok bool) {
	l.mu.Lock()
	c := l.lookup(key)
	if c == nil {
		c = &client{key: key, turn: make(chan struct{}, 1)}
		l.clients[key] = l.order.PushFront(c)
		for l.order.Len() > l.max {
			oldest := l.order.Back()
			l.order.Remove(oldest)
			delete(l.clients, oldest.Value.(*client).key)
		}
	} else {
		l.order.MoveToFront(l.clients[key])
	}
	ahead := c.failures + c.inflight
	throttled := ahead >= freeFailures
	if throttled && c.waiting >= maxWaitingPerClient {
		l.mu.Unlock()
		return nil, false
	}
	c.inflight++
	c.last = l.now()
	if throttled {
		c.waiting++
	}
	l.mu.Unlock()
	a = &attempt{l: l, c: c, throttled: throttled}
	if a.throttled {
		var gone bool
		select {
		case c.turn <- struct{}{}:
		case <-ctx.Done():
			gone = true
		}
		l.mu.Lock()
		c.waiting--
		l.mu.Unlock()
		if gone {
			a.throttled = false // holds no turn
			a.failed()
			return a, false
		}
		// Attempts that ran meanwhile have been decided.
		l.mu.Lock()
		ahead = c.failures + c.inflight - 1
		l.mu.Unlock()
	}
	a.delay = delayAfter(ahead + 1)
	a.failures = ahead + 1
	return a, true
}

func (a *attempt) end(f func(c *client)) {
	a.l.mu.Lock()
	a.c.inflight--
	f(a.c)
	a.l.mu.Unlock()
	if a.throttled {
		<-a.c.turn
	}
}

// succeeded forgets the client's failures.
func (a *attempt) succeeded() {
	a.end(func(c *client) {
		c.failures = 0
		if e, ok := a.l.clients[c.key]; ok && e.Value == c && c.inflight == 0 {
			a.l.order.Remove(e)
			delete(a.l.clients, c.key)
		}
	})
}

// failed counts a wrong password (or a client that left while it waited).
func (a *attempt) failed() {
	a.end(func(c *client) {
		c.failures++
		c.last = a.l.now()
	})
}

// abandoned takes the attempt back: the password was never checked (the
// server was too busy), so it was no guess.
func (a *attempt) abandoned() { a.end(func(*client) {}) }

// lookup returns key's record, resetting it if it has been quiet for
// forgetAfter. Callers hold mu.
func (l *limiter) lookup(key netip.Addr) *client {
	e, ok := l.clients[key]
	if !ok {
		return nil
	}
	c := e.Value.(*client)
	if c.inflight == 0 && l.now().Sub(c.last) > forgetAfter {
		c.failures = 0
	}
	return c
}

func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}

func delayAfter(failures int) time.Duration {
	n := failures - freeFailures - 1
	if n < 0 {
		return 0
	}
	if n > 5 { // 250ms<<5 is already past maxDelay; also avoids overflow
		n = 5
	}
	return min(firstDelay<<n, maxDelay)
}
