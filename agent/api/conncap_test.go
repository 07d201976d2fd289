package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"
)

// At the cap, idle keep-alive connections make room for a new client;
// busy ones are not cut, and the newcomer waits for one of them.
func TestConnCapClosesIdleConnectionsFirst(t *testing.T) {
	capped, url, release := serveCapped(t, 2)
	get := func(c *http.Client, path string) error {
		resp, err := c.Get(url + path)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	// Two clients, each leaving an idle keep-alive connection: the cap.
	idle1, idle2 := &http.Client{Transport: &http.Transport{}}, &http.Client{Transport: &http.Transport{}}
	for _, c := range []*http.Client{idle1, idle2} {
		if err := get(c, "/"); err != nil {
			t.Fatal(err)
		}
	}
	// Both must be open and marked idle by the server (its ConnState
	// hook runs after the client has its answer): otherwise the older one
	// may be the only idle one when the newcomer arrives.
	idle := capped.idleCount
	for i := 0; capped.open() != 2 || idle() != 2; i++ {
		if i == 500 {
			t.Fatalf("%d connections open, %d idle, want 2 and 2", capped.open(), idle())
		}
		time.Sleep(time.Millisecond)
	}
	fresh := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Second}
	if err := get(fresh, "/"); err != nil {
		t.Fatalf("a new client at the cap of idle connections: %v", err)
	}
	// The newest idle connection made room; the oldest is still open and
	// serves its client's next request on the same connection.
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url+"/", nil)
	if resp, err := idle1.Do(req); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if !reused {
		t.Error("the oldest idle connection was closed to make room")
	}
	// Now both places busy: a newcomer waits until one is done.
	fresh.CloseIdleConnections()
	idle1.CloseIdleConnections()
	idle2.CloseIdleConnections()
	for capped.open() != 0 {
		time.Sleep(5 * time.Millisecond)
	}
	busy := make(chan error, 2)
	for range 2 {
		go func() { busy <- get(&http.Client{Transport: &http.Transport{}}, "/slow") }()
	}
	for capped.open() != 2 {
		time.Sleep(5 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- get(&http.Client{Transport: &http.Transport{}}, "/") }()
	select {
	case err := <-done:
		t.Fatalf("a third connection was served beside two busy ones at a cap of 2 (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	for range 2 {
		if err := <-busy; err != nil {
			t.Fatal(err)
		}
	}
	waitServed(t, done, "the waiting connection was not served after the busy ones finished")
}

// A connection on which someone logged in is not closed to make room
// while a stranger's connection could be: during a flood whose
// connections are all busy, the admin's idle one stays, and the newcomer
// waits for a stranger's. When every connection is a logged-in one, the
// newest idle one makes room.
func TestConnCapKeepsLoggedInConnections(t *testing.T) {
	capped, url, release := serveCapped(t, 2)
	get := func(c *http.Client, path string) (bool, error) { return getReused(c, url+path) }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for i := 0; !ok(); i++ {
			if i == 1000 {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	idle := capped.idleCount

	admin := &http.Client{Transport: &http.Transport{}}
	if _, err := get(admin, "/login"); err != nil {
		t.Fatal(err)
	}
	waitFor("the admin's connection to be idle", func() bool { return idle() == 1 })
	busy := make(chan error, 1)
	go func() { _, err := get(&http.Client{Transport: &http.Transport{}}, "/slow"); busy <- err }()
	waitFor("the stranger's connection", func() bool { return capped.open() == 2 })

	done := make(chan error, 1)
	newcomer := &http.Client{Transport: &http.Transport{}}
	go func() { _, err := get(newcomer, "/"); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("a newcomer was served at the cap beside a busy stranger and the admin (%v): the admin's connection was closed", err)
	case <-time.After(200 * time.Millisecond):
	}
	if reused, err := get(admin, "/"); err != nil || !reused {
		t.Fatalf("the admin's next request: reused %v, error %v; want its logged-in connection kept", reused, err)
	}
	close(release)
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	waitServed(t, done, "the newcomer was not served once the stranger's connection went idle")
	if reused, err := get(admin, "/"); err != nil || !reused {
		t.Fatalf("the admin after the newcomer: reused %v, error %v; want the stranger's connection closed, not the admin's", reused, err)
	}

	// Both open connections logged in and idle: the newest makes room.
	if _, err := get(newcomer, "/login"); err != nil {
		t.Fatal(err)
	}
	waitFor("two idle connections", func() bool { return capped.open() == 2 && idle() == 2 })
	fresh := &http.Client{Transport: &http.Transport{}, Timeout: 2 * time.Second}
	if _, err := get(fresh, "/"); err != nil {
		t.Fatalf("a new client when every connection is a logged-in idle one: %v", err)
	}
	if reused, err := get(admin, "/"); err != nil || !reused {
		t.Fatalf("the oldest logged-in connection: reused %v, error %v; want the newest closed instead", reused, err)
	}
}

// idleCount is how many connections the server marked idle.
func (l *connCap) idleCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, st := range l.conns {
		if st == http.StateIdle {
			n++
		}
	}
	return n
}

// waitServed waits for a request's outcome on done, failing with late if
// it takes over 5 s.
func waitServed(t *testing.T, done <-chan error, late string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal(late)
	}
}

// serveCapped serves HTTP on loopback through a connCap of max
// connections, as the API does: /login marks its connection logged in,
// /slow answers once release is closed.
func serveCapped(t *testing.T, max int) (capped *connCap, url string, release chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	capped = newConnCap(ln, max)
	release = make(chan struct{})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/login":
				LoggedIn(r)
			case "/slow":
				<-release
			}
			io.WriteString(w, "ok")
		}),
		ConnState:   capped.track,
		ConnContext: capped.connContext,
	}
	go srv.Serve(capped)
	t.Cleanup(func() { srv.Close() })
	return capped, "http://" + ln.Addr().String(), release
}

// More idle logged-in connections than one operator holds are closed to
// make room even while a stranger's connection is busy: a client that
// leaves a connection behind at every request must not make newcomers
// wait at the cap for the stranger (up to a stalled handshake's 30 s).
func TestConnCapClosesLoggedInConnectionsBeyondTheFew(t *testing.T) {
	capped, url, release := serveCapped(t, 4) // keeps 1
	defer close(release)
	get := func(c *http.Client, path string) (bool, error) { return getReused(c, url+path) }
	admin := &http.Client{Transport: &http.Transport{}}
	for _, c := range []*http.Client{admin, {Transport: &http.Transport{}}, {Transport: &http.Transport{}}} {
		if _, err := get(c, "/login"); err != nil {
			t.Fatal(err)
		}
	}
	go get(&http.Client{Transport: &http.Transport{}}, "/slow")
	for i := 0; capped.open() != 4 || capped.idleCount() != 3; i++ {
		if i == 1000 {
			t.Fatalf("%d connections open, %d idle, want 4 and 3", capped.open(), capped.idleCount())
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { _, err := get(&http.Client{Transport: &http.Transport{}}, "/"); done <- err }()
	waitServed(t, done, "a newcomer waited for a busy stranger while three logged-in connections were idle")
	if reused, err := get(admin, "/"); err != nil || !reused {
		t.Fatalf("the oldest logged-in connection: reused %v, error %v; want the newest closed instead", reused, err)
	}
}

// getReused GETs url with c and says whether c reused a connection.
func getReused(c *http.Client, url string) (reused bool, err error) {
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return reused, err
	}
	io.Copy(io.Discard, resp.Body)
	return reused, resp.Body.Close()
}
