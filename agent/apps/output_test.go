package apps

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/pid1"
)

// serialPort writes at 115200 baud, as the box's ttyS0 does.
type serialPort struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *serialPort) Write(p []byte) (int, error) {
	time.Sleep(time.Duration(len(p)) * time.Second / 11520)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *serialPort) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

func TestLineLimit(t *testing.T) {
	var l lineLimit
	t0 := time.Unix(0, 0)
	n := 0
	for i := 0; i < 1000; i++ {
		if l.allow(t0) {
			n++
		}
	}
	if n != outputBurst || l.suppressed != 1000-outputBurst {
		t.Fatalf("burst: %d passed, %d suppressed", n, l.suppressed)
	}
	n = 0
	for i := 0; i < 100; i++ {
		if l.allow(t0.Add(time.Second)) {
			n++
		}
	}
	if n != outputRate {
		t.Fatalf("a second later %d lines passed, want %d", n, outputRate)
	}
}

// 10 MB of application output and 200 failed logins, all logged to a
// console at serial speed: the application is never held on its pipe, the
// agent's own messages get out, and /healthz and the admin's requests
// answer within a second.
func TestFloodedConsoleDoesNotBlockTheAgent(t *testing.T) {
	serial := &serialPort{}
	con := pid1.NewConsole(pid1.DefaultConsoleBuffer, serial)
	log := slog.New(slog.NewTextHandler(con, nil))
	srv := api.New(api.Config{
		Logger: log,
		Verify: func(u, p string) bool { return u == "admin" && p == "right" },
		// The admin logged in before: its credentials skip the queue of
		// guesses from the same address.
		Known:   func(u, p string) bool { return u == "admin" && p == "right" },
		Healthy: func() error { return nil },
		Status:  func() any { return map[string]string{"state": "running"} },
	})
	ts := httptest.NewTLSServer(srv.Handler())
	defer ts.Close()

	log.Info("first-boot password: keep-me")
	line := strings.Repeat("x", 99) + "\n"
	flood := strings.NewReader(strings.Repeat(line, 100_000)) // 10 MB
	pumped := make(chan time.Duration, 1)
	go func() {
		t0 := time.Now()
		pumpLines(log, flood, "stdout", time.Now)
		pumped <- time.Since(t0)
	}()
	// The failed logins are held back by the login limiter; they are
	// cancelled once the checks are done.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/api/v1/status", nil)
			req.SetBasicAuth("admin", "wrong")
			if resp, err := ts.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // the flood is under way
	for _, c := range []struct {
		path string
		auth bool
	}{{"/healthz", false}, {"/api/v1/status", true}} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+c.path, nil)
		if c.auth {
			req.SetBasicAuth("admin", "right")
		}
		t0 := time.Now()
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		resp.Body.Close()
		if d := time.Since(t0); resp.StatusCode != http.StatusOK || d > time.Second {
			t.Errorf("%s during the flood: %d after %v, want 200 within 1 s", c.path, resp.StatusCode, d)
		}
	}
	t0 := time.Now()
	log.Info("the agent's own message")
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Errorf("logging took %v during the flood", d)
	}
	select {
	case d := <-pumped:
		t.Logf("10 MB of output read in %v", d)
	case <-time.After(10 * time.Second):
		t.Fatal("the application's output is held back by the console: its pipe would fill and block it")
	}
	cancel()
	wg.Wait()
	if !con.Flush(60 * time.Second) {
		t.Fatal("the console did not drain")
	}
	out := serial.String()
	for _, want := range []string{"keep-me", "the agent's own message", "application output suppressed"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q", want)
		}
	}
	if len(out) > 2*pid1.DefaultConsoleBuffer {
		t.Errorf("console got %d bytes of a 10 MB flood; the rate limit should keep it small", len(out))
	}
}
