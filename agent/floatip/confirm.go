package floatip

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// A disable that removes the address the client talks to could cut the
// operator off, as a network change can: it is undone unless confirmed
// from wherever the client reaches the box afterwards (netcfg's
// confirm-or-rollback).

// pendingDisables are the unconfirmed disables, by token.
type pendingDisables struct {
	mu      sync.Mutex
	pending map[string]*time.Timer
}

// viaAddress says whether r arrived on the address ip.
func viaAddress(r *http.Request, ip netip.Addr) bool {
	la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(la.String())
	return err == nil && ap.Addr().Unmap() == ip
}

// start arms undo after timeout and returns the token that stops it.
func (p *pendingDisables) start(timeout time.Duration, undo func()) string {
	b := make([]byte, 16)
	rand.Read(b)
	token := hex.EncodeToString(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == nil {
		p.pending = map[string]*time.Timer{}
	}
	p.pending[token] = time.AfterFunc(timeout, func() {
		p.mu.Lock()
		_, still := p.pending[token]
		delete(p.pending, token)
		p.mu.Unlock()
		if still {
			undo()
		}
	})
	return token
}

// confirm stops the undo of token; false when there is none (unknown, or
// already undone).
func (p *pendingDisables) confirm(token string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.pending[token]
	if ok {
		t.Stop()
		delete(p.pending, token)
	}
	return ok
}
