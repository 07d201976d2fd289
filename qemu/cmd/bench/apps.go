package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/qemu"
)

// appFigures measures issue 4's figures on a box running the demo app
// 1.0.0, updated to 1.0.1 from an update server on host loopback whose
// connection breaks off at half the package:
//   - app switch downtime: the longest stretch during the update in which
//     the app's port did not answer a poller on the host (every 20 ms),
//     against the same measure across a plain reboot of the box;
//   - resume cost: package bytes the server sent for the interrupted
//     install, against the package's size.
func (b *bench) appFigures() error {
	img, err := b.appImage()
	if err != nil {
		return fmt.Errorf("app bench image: %w", err)
	}
	srv, err := b.appRelease("1.0.1")
	if err != nil {
		return fmt.Errorf("app release: %w", err)
	}
	defer srv.Close()
	appPort, err := freeTCP()
	if err != nil {
		return err
	}
	vm, err := b.start(qemu.Config{Image: img, HostLoopback: true,
		HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", appPort, appimage.DemoPort)}})
	if err != nil {
		return err
	}
	defer vm.Close()
	if _, err := vm.Expect(`keel: ready[^\r\n]*`, 3*time.Minute); err != nil {
		return err
	}
	poll := newPoller(fmt.Sprintf("http://127.0.0.1:%d/healthz", appPort))
	defer poll.stop()
	if !poll.waitUp(2 * time.Minute) {
		return fmt.Errorf("the demo app never answered on its port")
	}
	box := newBox(vm)
	config := fmt.Sprintf(`{"server":"http://10.0.2.2:%d"}`, srv.port)
	if code, body, err := box.do("PUT", "/api/v1/updates/config", strings.NewReader(config), time.Minute); err != nil || code != http.StatusOK {
		return fmt.Errorf("PUT /api/v1/updates/config: %d %s %v", code, body, err)
	}
	if code, body, err := box.do("POST", "/api/v1/updates/check", nil, 2*time.Minute); err != nil || code != http.StatusOK {
		return fmt.Errorf("POST /api/v1/updates/check: %d %s %v", code, body, err)
	}
	poll.reset()
	code, body, err := box.do("POST", "/api/v1/updates/install", strings.NewReader(`{"name":"demo","version":"1.0.1"}`), 5*time.Minute)
	if err != nil || code != http.StatusAccepted {
		return fmt.Errorf("install demo 1.0.1: %d %s %v", code, body, err)
	}
	if !bytes.Contains(body, []byte("resumed")) {
		return fmt.Errorf("the download was not interrupted and resumed: %s", body)
	}
	if !poll.waitUp(time.Minute) {
		return fmt.Errorf("the demo app did not answer after the update")
	}
	switchGap := poll.longestGap()

	poll.reset()
	if code, body, err := box.do("POST", "/api/v1/power/reboot", nil, time.Minute); err != nil || code != http.StatusAccepted {
		return fmt.Errorf("reboot: %d %s %v", code, body, err)
	}
	// The agent stops the app before it prints this line.
	if _, err := vm.Expect(`keel: reboot`, time.Minute); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	if !poll.waitUp(3 * time.Minute) {
		return fmt.Errorf("the demo app did not answer after the reboot")
	}
	rebootGap := poll.longestGap()
	row("apps: update downtime of the app's port (ms)", float64(switchGap.Milliseconds()), float64(rebootGap.Milliseconds()),
		"<= 2000 ms (baseline: the same across a reboot)")
	row("apps: bytes fetched, install cut at half (MiB)", float64(srv.sent.Load())/(1<<20), float64(srv.size)/(1<<20),
		"<= 1.05x the package (baseline: its size)")
	return nil
}

// appImage is a 1.0.0 image with the demo app 1.0.0 in app-a.
func (b *bench) appImage() (string, error) {
	app := filepath.Join(b.work, "demo-1.0.0.squashfs")
	if err := appimage.Demo(app, "1.0.0"); err != nil {
		return "", err
	}
	out := filepath.Join(b.work, "apps.img")
	return out, b.buildImage(out, diskimage.Options{GrubTimeout: 1, AppPayload: app})
}

// appServer serves a release folder like `image serve` (Range, ETag) and
// breaks the first package download off at half.
type appServer struct {
	dir  string
	port int
	size int64 // the package's size
	sent atomic.Int64
	cut  atomic.Bool
	srv  *http.Server
}

func (s *appServer) Close() { s.srv.Close() }

// appRelease writes a signed demo app package of version and a catalog,
// and serves them.
func (b *bench) appRelease(version string) (*appServer, error) {
	key, err := b.signingKey()
	if err != nil {
		return nil, err
	}
	s := &appServer{dir: filepath.Join(b.work, "release")}
	sq := filepath.Join(b.work, "demo-"+version+".squashfs")
	if err := appimage.Demo(sq, version); err != nil {
		return nil, err
	}
	payload, err := os.Open(sq)
	if err != nil {
		return nil, err
	}
	defer payload.Close()
	var pkg bytes.Buffer
	if err := kpkg.Write(&pkg, kpkg.Manifest{Kind: kpkg.KindApp, Name: "demo", Version: kpkg.MustParseVersion(version)}, payload, key); err != nil {
		return nil, err
	}
	s.size = int64(pkg.Len())
	if err := os.MkdirAll(filepath.Join(s.dir, catalog.PackagesDir), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(s.dir, catalog.PackagesDir, "demo-app-"+version+".kpkg"), pkg.Bytes(), 0o644); err != nil {
		return nil, err
	}
	if _, err := catalog.Build(s.dir, key, time.Now()); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	files := http.FileServer(http.Dir(s.dir))
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"bench"`)
		if !strings.HasPrefix(r.URL.Path, "/packages/") {
			files.ServeHTTP(w, r)
			return
		}
		cw := &countingWriter{ResponseWriter: w, n: &s.sent}
		if s.cut.CompareAndSwap(false, true) {
			cw.limit = s.size / 2
		}
		files.ServeHTTP(cw, r)
		if cw.limit > 0 {
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
	})}
	go s.srv.Serve(l)
	return s, nil
}

// countingWriter counts body bytes and, with a limit, passes no more.
type countingWriter struct {
	http.ResponseWriter
	n     *atomic.Int64
	limit int64
	done  int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.limit > 0 && c.done+int64(len(b)) > c.limit {
		b = b[:c.limit-c.done]
	}
	n, err := c.ResponseWriter.Write(b)
	c.done += int64(n)
	c.n.Add(int64(n))
	if c.limit > 0 && c.done >= c.limit {
		return n, io.ErrShortWrite
	}
	return n, err
}

// poller asks a URL every 20 ms and remembers the longest stretch between
// two answers since reset.
type poller struct {
	url  string
	mu   sync.Mutex
	last time.Time // last answer
	gap  time.Duration
	up   bool
	quit chan struct{}
}

func newPoller(url string) *poller {
	p := &poller{url: url, quit: make(chan struct{})}
	go p.run()
	return p
}

func (p *poller) run() {
	c := &http.Client{Timeout: 200 * time.Millisecond}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-t.C:
		}
		resp, err := c.Get(p.url)
		ok := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		now := time.Now()
		p.mu.Lock()
		if ok {
			if !p.last.IsZero() && now.Sub(p.last) > p.gap {
				p.gap = now.Sub(p.last)
			}
			p.last = now
		}
		p.up = ok
		p.mu.Unlock()
	}
}

func (p *poller) reset() {
	p.mu.Lock()
	p.gap = 0
	p.mu.Unlock()
}

func (p *poller) longestGap() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gap
}

func (p *poller) waitUp(timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		p.mu.Lock()
		up := p.up
		p.mu.Unlock()
		if up {
			return true
		}
	}
	return false
}

func (p *poller) stop() { close(p.quit) }

func freeTCP() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
