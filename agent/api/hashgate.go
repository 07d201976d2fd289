package api

import (
	"context"
	"errors"
	"sync"
)

// The password check is the one costly thing an anonymous client can make
// the box do (argon2id: tens of milliseconds and 16 MiB each). Only a few
// run at once and only so many wait; the rest are answered 503 at once
// rather than piling up memory and latency.
const (
	maxHashing     = 2  // password checks running at once
	maxHashWaiting = 32 // password checks waiting for one of those
)

// errBusy: the hashing queue is full.
var errBusy = errors.New("too many logins are being checked")

type hashGate struct {
	slots chan struct{}

	mu      sync.Mutex
	waiting int
	max     int
}

func newHashGate(running, waiting int) *hashGate {
	return &hashGate{slots: make(chan struct{}, running), max: waiting}
}

// do runs check when a slot is free. It gives up with errBusy when the
// queue is full, and with ctx's error when the client goes away while
// waiting, so queued work of departed clients is dropped.
func (g *hashGate) do(ctx context.Context, check func() bool) (bool, error) {
	select {
	case g.slots <- struct{}{}:
	default:
		g.mu.Lock()
		if g.waiting >= g.max {
			g.mu.Unlock()
			return false, errBusy
		}
		g.waiting++
		g.mu.Unlock()
		defer func() {
			g.mu.Lock()
			g.waiting--
			g.mu.Unlock()
		}()
		select {
		case g.slots <- struct{}{}:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	defer func() { <-g.slots }()
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	return check(), nil
}
