package install

import (
	"bufio"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/image/kpkg"
)

// apiServer serves e's installer behind the agent's real API server
// (Basic auth, JSON errors) over TLS with HTTP/2, as the box does.
func apiServer(t *testing.T, e *env) *httptest.Server {
	t.Helper()
	srv := api.New(api.Config{Verify: func(u, p string) bool { return u == "admin" && p == "pw" }})
	e.in.Routes(srv)
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.EnableHTTP2 = true
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return ts
}

// bigPackage writes a package with a payload of size zero bytes to a file,
// without holding it in memory.
func bigPackage(t *testing.T, m kpkg.Manifest, size int64, key ed25519.PrivateKey) string {
	t.Helper()
	dir := t.TempDir()
	payload, err := os.Create(filepath.Join(dir, "payload"))
	if err != nil {
		t.Fatal(err)
	}
	defer payload.Close()
	if err := payload.Truncate(size); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "pkg.kpkg")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	if err := kpkg.Write(w, m, payload, key); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(payload.Name())
	return path
}

// heapWatch samples the process's heap while a client streams, since the
// server runs in this process.
type heapWatch struct {
	stop chan struct{}
	done sync.WaitGroup
	base uint64
	peak uint64
}

func watchHeap() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{stop: make(chan struct{}), base: ms.HeapInuse, peak: ms.HeapInuse}
	h.done.Add(1)
	go func() {
		defer h.done.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				h.peak = max(h.peak, ms.HeapInuse)
			}
		}
	}()
	return h
}

func (h *heapWatch) growth() uint64 {
	close(h.stop)
	h.done.Wait()
	return h.peak - h.base
}

const pyUpload = `
import ssl, sys, base64, os, urllib.request, urllib.error
url, path = sys.argv[1], sys.argv[2]
ctx = ssl._create_unverified_context()
with open(path, "rb") as f:
    req = urllib.request.Request(url, data=f, method="POST")
    req.add_header("Content-Length", str(os.path.getsize(path)))
    req.add_header("Authorization", "Basic " + base64.b64encode(b"admin:pw").decode())
    try:
        resp = urllib.request.urlopen(req, context=ctx, timeout=120)
        print(resp.status); print(resp.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code); print(e.read().decode())
`

// upload sends the file with a client that reads the answer only after
// the whole body, and returns the status and the JSON error.
func upload(t *testing.T, client, url, path string) (int, string) {
	t.Helper()
	var cmd *exec.Cmd
	switch client {
	case "python":
		cmd = exec.Command("python3", "-c", pyUpload, url, path)
	case "curl":
		cmd = exec.Command("curl", "-sS", "-k", "-u", "admin:pw", "-X", "POST", "-T", path, "-w", "\n%{http_code}\n", url)
	case "curl-http1.1":
		cmd = exec.Command("curl", "-sS", "-k", "--http1.1", "-u", "admin:pw", "-X", "POST", "-T", path, "-w", "\n%{http_code}\n", url)
	default:
		t.Fatalf("no client %s", client)
	}
	if _, err := exec.LookPath(cmd.Args[0]); err != nil {
		t.Fatalf("%s is needed for this test (image/deps.sh installs it): %v", cmd.Args[0], err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", client, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var code int
	var body string
	if client == "python" {
		fmt.Sscan(lines[0], &code)
		body = strings.Join(lines[1:], "\n")
	} else {
		fmt.Sscan(lines[len(lines)-1], &code)
		body = strings.Join(lines[:len(lines)-1], "\n")
	}
	var a struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("%s: the answer is not the JSON error: %q (%v)", client, out, err)
	}
	return code, a.Error
}

// A refusal after the manifest reaches clients that send a whole 200 MiB
// body before they read, with its status and sentence, and the discarded
// rest of the body does not grow the agent's memory.
func TestRefusedBigUploadReachesTheClient(t *testing.T) {
	e := newEnv(t)
	ts := apiServer(t, e)
	url := ts.URL + "/api/v1/install"
	const size = 200 << 20
	other := manifest("1.2.0")
	other.Hardware = []string{"kx-900"}
	cases := []struct {
		name    string
		pkg     string
		clients []string
		code    int
		want    string
	}{
		{"downgrade", bigPackage(t, manifest("1.0.0"), size, vendorKey), []string{"python", "curl", "curl-http1.1"},
			http.StatusConflict, "1.0.0 is older than the installed 1.1.0"},
		{"unknown key", bigPackage(t, manifest("1.2.0"), size, otherKey), []string{"python", "curl"},
			http.StatusForbidden, "signed by an unknown key"},
		{"wrong hardware", bigPackage(t, other, size, vendorKey), []string{"python", "curl"},
			http.StatusUnprocessableEntity, "kx-900"},
	}
	before := e.snapshot()
	for _, c := range cases {
		for _, client := range c.clients {
			h := watchHeap()
			start := time.Now()
			code, msg := upload(t, client, url, c.pkg)
			grew := h.growth()
			t.Logf("%s with %s: %d %q in %v, heap +%d KiB", c.name, client, code, msg, time.Since(start).Round(time.Millisecond), grew>>10)
			if code != c.code || !strings.Contains(msg, c.want) {
				t.Errorf("%s with %s: %d %q, want %d and a sentence with %q", c.name, client, code, msg, c.code, c.want)
			}
			if grew > 16<<20 {
				t.Errorf("%s with %s: the heap grew by %d MiB while 200 MiB were discarded", c.name, client, grew>>20)
			}
		}
	}
	e.assertUnchanged(before)
}

// rawRequest opens a TLS connection (HTTP/1.1) and writes a request head.
func rawRequest(t *testing.T, ts *httptest.Server, head string) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", ts.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	return c
}

const authHeader = "Authorization: Basic YWRtaW46cHc=\r\n" // admin:pw

// A client that stops sending halfway through a refused upload is dropped
// after the idle deadline, with the answer written for it.
func TestStalledRefusedUploadIsDropped(t *testing.T) {
	e := newEnv(t)
	e.in.Drain = api.Drain{Idle: 300 * time.Millisecond}
	ts := apiServer(t, e)
	pkg := build(t, manifest("1.0.0"), payload(1<<20, 3), vendorKey)
	c := rawRequest(t, ts, fmt.Sprintf("POST /api/v1/install HTTP/1.1\r\nHost: box\r\n%sContent-Length: %d\r\n\r\n", authHeader, 100<<20))
	if _, err := c.Write(pkg[:256<<10]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer for a stalled upload: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	took := time.Since(start)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(b), "older than the installed") {
		t.Errorf("%s %s", resp.Status, b)
	}
	if took > 3*time.Second {
		t.Errorf("the stalled client was answered after %v; the idle deadline is 300ms", took)
	}
	// The connection is closed: the body was not read to its end.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("the connection stayed open after a body that was not read to its end")
	}
}

// A client that asks for "100 Continue" is refused before it sends the
// payload when the installer is busy.
func TestBusyRefusesBeforeContinue(t *testing.T) {
	e := newEnv(t)
	ts := apiServer(t, e)
	e.in.mu.Lock() // another install holds the installer
	defer e.in.mu.Unlock()
	c := rawRequest(t, ts, fmt.Sprintf("POST /api/v1/install HTTP/1.1\r\nHost: box\r\n%sExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", authHeader, 200<<20))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(b), "another install is starting") {
		t.Errorf("%s %s; want 409 before 100 Continue", resp.Status, b)
	}
}
