package pid1

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a console; with a gate it writes nothing until the gate
// opens, like a serial port whose far end stopped reading.
type recorder struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

func (r *recorder) lines() int { return strings.Count(r.String(), "\n") }

// A console that does not write neither blocks the writer nor holds back
// a working one; what does not fit is dropped and counted on the console.
func TestConsoleNeverBlocks(t *testing.T) {
	stuck := &recorder{gate: make(chan struct{})}
	working := &recorder{}
	c := NewConsole(4096, stuck, working)
	c.Write([]byte("first-boot password: keep-me\n"))
	line := []byte(strings.Repeat("y", 63) + "\n")
	const lines = 1000 // 64 KB, sixteen times the queue

	done := make(chan string)
	go func() {
		for i := 1; i <= lines; i++ {
			c.Write(line)
			if i%10 != 0 {
				continue
			}
			// The working console keeps up however slowly this machine
			// schedules its goroutine, because the writer waits for it here;
			// what is tested is that the stuck one is not waited for.
			deadline := time.Now().Add(10 * time.Second)
			for working.lines() < i+1 {
				if time.Now().After(deadline) {
					done <- "the working console stopped at the stuck one's pace"
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
		done <- ""
	}()
	select {
	case msg := <-done:
		if msg != "" {
			t.Fatal(msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("writing to a console that does not write blocked the writer")
	}

	close(stuck.gate)
	if !c.Flush(10 * time.Second) {
		t.Fatal("the consoles did not drain")
	}
	out := stuck.String()
	if !strings.HasPrefix(out, "first-boot password: keep-me\n") {
		t.Errorf("the first message is lost: %.80q", out)
	}
	if !strings.Contains(out, "console messages were dropped") {
		t.Errorf("the stuck console is not told of the drops")
	}
	if n := working.lines(); n != lines+1 {
		t.Errorf("the working console wrote %d lines of %d", n, lines+1)
	}
	if strings.Contains(working.String(), "dropped") {
		t.Errorf("the working console dropped messages")
	}
	c.Write([]byte("after the flood\n"))
	c.Flush(time.Second)
	if !strings.HasSuffix(stuck.String(), "after the flood\n") {
		t.Errorf("the console does not write after a flood")
	}
}
