package api

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// connCap bounds the open connections. At the cap, an idle keep-alive
// connection is closed to make room (a flood of answered guesses must not
// keep the admin out), the newest first. The idle connections on which
// someone logged in are closed last: only when no other is open, or when
// there are more of them than one operator's browsers and scripts hold
// (keep). Otherwise a flood whose connections are all busy would leave the
// admin's idle one the only one to close, and the admin would queue behind
// the flood's TLS handshakes; and without the bound, a client that leaves
// a logged-in connection behind at every request would, at the cap, make
// every newcomer wait for a stranger's connection, up to a stalled
// handshake's 30 s. Only when no connection can be closed does a new one
// wait, accepted but not served, as under netutil.LimitListener.
type connCap struct {
	net.Listener
	max  int
	keep int // idle logged-in connections kept while strangers' are busy

	mu    sync.Mutex
	seq   uint64
	conns map[*cappedConn]http.ConnState
	wake  chan struct{} // a token when a connection closes or goes idle
}

func newConnCap(ln net.Listener, limit int) *connCap {
	return &connCap{Listener: ln, max: limit, keep: max(1, limit/8), conns: map[*cappedConn]http.ConnState{}, wake: make(chan struct{}, 1)}
}

func (l *connCap) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	// Room is made only for a client that has come: idle connections are
	// closed when a new one arrives at the cap, not before.
	for {
		l.mu.Lock()
		if len(l.conns) < l.max {
			break
		}
		var stranger, member *cappedConn // the newest idle of each
		strangers, idleMembers := 0, 0
		for c, st := range l.conns {
			in := c.loggedIn.Load()
			if !in {
				strangers++
			}
			if st != http.StateIdle {
				continue
			}
			if in {
				idleMembers++
				if member == nil || c.seq > member.seq {
					member = c
				}
			} else if stranger == nil || c.seq > stranger.seq {
				stranger = c
			}
		}
		l.mu.Unlock()
		switch {
		case stranger != nil:
			stranger.Close()
		case member != nil && (strangers == 0 || idleMembers > l.keep):
			member.Close()
		default:
			<-l.wake
		}
	}
	l.seq++
	cc := &cappedConn{Conn: c, l: l, seq: l.seq}
	l.conns[cc] = http.StateNew
	l.mu.Unlock()
	return cc, nil
}

// track is the server's ConnState hook.
func (l *connCap) track(c net.Conn, st http.ConnState) {
	cc := capped(c)
	if cc == nil {
		return
	}
	l.mu.Lock()
	if _, open := l.conns[cc]; open && st != http.StateClosed && st != http.StateHijacked {
		l.conns[cc] = st
	}
	l.mu.Unlock()
	if st == http.StateIdle {
		l.signal()
	}
}

type connKey struct{}

// connContext is the server's ConnContext hook: it lets a request reach
// its connection, to mark it with LoggedIn.
func (l *connCap) connContext(ctx context.Context, c net.Conn) context.Context {
	if cc := capped(c); cc != nil {
		return context.WithValue(ctx, connKey{}, cc)
	}
	return ctx
}

// capped is the connCap's connection under c (the server wraps it in TLS).
func capped(c net.Conn) *cappedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, _ := c.(*cappedConn)
	return cc
}

// LoggedIn marks r's connection as one on which someone logged in: at the
// cap of connections it is the last to be closed. The web interface calls
// it for a page opened with a live session.
func LoggedIn(r *http.Request) {
	if cc, ok := r.Context().Value(connKey{}).(*cappedConn); ok {
		cc.loggedIn.Store(true)
	}
}

func (l *connCap) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *connCap) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

type cappedConn struct {
	net.Conn
	l    *connCap
	seq  uint64 // order of acceptance
	once sync.Once
	// loggedIn is set once a request on the connection authenticated.
	loggedIn atomic.Bool
}

func (c *cappedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.signal()
	})
	return c.Conn.Close()
}
