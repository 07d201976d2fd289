package pid1

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type slowWriter struct {
	mu    sync.Mutex
	delay time.Duration
	buf   bytes.Buffer
}

func (s *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *slowWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// A console that writes slowly neither blocks the writer nor holds back
// a fast one; what does not fit is dropped and counted on the console.
func TestConsoleNeverBlocks(t *testing.T) {
	slow := &slowWriter{delay: 10 * time.Millisecond}
	fast := &slowWriter{}
	c := NewConsole(4096, slow, fast)
	c.Write([]byte("first-boot password: keep-me\n"))
	line := []byte(strings.Repeat("y", 63) + "\n")
	t0 := time.Now()
	for i := 0; i < 100_000; i++ { // 6.4 MB
		c.Write(line)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("writing 6.4 MB to a slow console took %v", d)
	}
	if !c.Flush(10 * time.Second) {
		t.Fatal("the consoles did not drain")
	}
	out := slow.String()
	if !strings.HasPrefix(out, "first-boot password: keep-me\n") {
		t.Errorf("the first message is lost: %.80q", out)
	}
	if !strings.Contains(out, "console messages were dropped") {
		t.Errorf("the slow console is not told of the drops")
	}
	if f := fast.String(); strings.Count(f, "\n") <= strings.Count(out, "\n") {
		t.Errorf("the fast console (%d lines) was held back to the slow one's pace (%d lines)", strings.Count(f, "\n"), strings.Count(out, "\n"))
	}
	c.Write([]byte("after the flood\n"))
	c.Flush(time.Second)
	if !strings.HasSuffix(slow.String(), "after the flood\n") {
		t.Errorf("the console does not write after a flood")
	}
}
