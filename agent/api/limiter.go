package api

import (
	"container/list"
	"context"
	"net/netip"
	"sync"
	"time"
)

// Failed-login throttling, per client address.
const (
	freeFailures      = 3                      // consecutive failures answered at once
	firstDelay        = 250 * time.Millisecond // the delay after the 4th, doubling after
	maxDelay          = 5 * time.Second
	forgetAfter       = 15 * time.Minute // a quiet client starts afresh
	maxTrackedClients = 1024             // beyond this the least recently failed is forgotten
)

// limiter slows down password guessing. Once a client has failed
// freeFailures times in a row, each further failure is answered only after a
// delay that doubles up to maxDelay, and its attempts are taken one at a
// time, so opening many connections in parallel does not buy more guesses.
// A success clears the client's record.
type limiter struct {
	now func() time.Time
	max int

	mu      sync.Mutex
	clients map[netip.Addr]*list.Element // of *client
	order   *list.List                   // most recently failed first
}

type client struct {
	addr     netip.Addr
	failures int
	last     time.Time
	turn     chan struct{} // holds a token while a throttled attempt is in progress
}

func newLimiter(now func() time.Time, max int) *limiter {
	return &limiter{now: now, max: max, clients: map[netip.Addr]*list.Element{}, order: list.New()}
}

// awaitTurn waits, if addr is being throttled, until no other attempt of
// addr is in progress or ctx ends. The caller must call release when its
// attempt, including any delay, is over.
func (l *limiter) awaitTurn(ctx context.Context, addr netip.Addr) (release func()) {
	l.mu.Lock()
	c := l.lookup(addr)
	if c == nil || c.failures < freeFailures {
		l.mu.Unlock()
		return func() {}
	}
	turn := c.turn
	l.mu.Unlock()
	select {
	case turn <- struct{}{}:
		return func() { <-turn }
	case <-ctx.Done():
		return func() {}
	}
}

// failed records a failure and returns the client's consecutive failures and
// how long to wait before answering.
func (l *limiter) failed(addr netip.Addr) (int, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.lookup(addr)
	if c == nil {
		c = &client{addr: addr, turn: make(chan struct{}, 1)}
		l.clients[addr] = l.order.PushFront(c)
		for l.order.Len() > l.max {
			oldest := l.order.Back()
			l.order.Remove(oldest)
			delete(l.clients, oldest.Value.(*client).addr)
		}
	} else {
		l.order.MoveToFront(l.clients[addr])
	}
	c.failures++
	c.last = l.now()
	return c.failures, delayAfter(c.failures)
}

// succeeded forgets addr's failures.
func (l *limiter) succeeded(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.clients[addr]; ok {
		l.order.Remove(e)
		delete(l.clients, addr)
	}
}

// lookup returns addr's record, resetting it if it has been quiet for
// forgetAfter. Callers hold mu.
func (l *limiter) lookup(addr netip.Addr) *client {
	e, ok := l.clients[addr]
	if !ok {
		return nil
	}
	c := e.Value.(*client)
	if l.now().Sub(c.last) > forgetAfter {
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
