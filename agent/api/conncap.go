package api

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
)

// connCap bounds the open connections. At the cap, an idle keep-alive
// connection is closed to make room (a flood of answered guesses must not
// keep the admin out), the newest first: a connection that has stayed
// open for long, such as the admin's browser or script, is the last to go.
// Only when every connection is busy does a new one wait, accepted but not
// served, as under netutil.LimitListener.
type connCap struct {
	net.Listener
	max int

	mu    sync.Mutex
	seq   uint64
	conns map[*cappedConn]http.ConnState
	wake  chan struct{} // a token when a connection closes or goes idle
}

func newConnCap(ln net.Listener, max int) *connCap {
	return &connCap{Listener: ln, max: max, conns: map[*cappedConn]http.ConnState{}, wake: make(chan struct{}, 1)}
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
		var newest *cappedConn
		for c, st := range l.conns {
			if st == http.StateIdle && (newest == nil || c.seq > newest.seq) {
				newest = c
			}
		}
		l.mu.Unlock()
		if newest != nil {
			newest.Close()
		} else {
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
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, ok := c.(*cappedConn)
	if !ok {
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
