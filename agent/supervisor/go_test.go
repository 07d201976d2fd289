package supervisor

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// A panic in a background task would end the test binary (and PID 1) if it
// escaped: the test surviving is the assertion, the log the operator's
// trace.
func TestGoRecoversAPanic(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf, mu: &mu}, nil))
	done := make(chan struct{})
	Go(log, "reboot after install", func() {
		defer close(done)
		panic("a bug in a background task")
	})
	<-done
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		out := buf.String()
		mu.Unlock()
		if strings.Contains(out, "background task panicked") && strings.Contains(out, "reboot after install") && strings.Contains(out, "go_test.go") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log does not name the panic, the task and its stack:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
