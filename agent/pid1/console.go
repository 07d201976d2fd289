// Package pid1 holds what only the init process does: writing to the
// consoles, reaping orphans, and the final sync, unmount and power-off.
package pid1

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultConsoleBuffer bounds what waits for each console: a serial port at
// 115200 baud writes about 11 KiB a second, so this is some 20 s of output.
const DefaultConsoleBuffer = 256 << 10

// Console writes each message to every console the box has (serial and
// screen), so an operator sees it wherever they look.
//
// Write never blocks: a serial console is slow, and a writer waiting on it
// would hold the logger's lock and, through it, every request that logs.
// Each console has its own bounded queue drained by its own goroutine, so
// a slow serial port does not hold the screen back. When a queue is full
// new messages are dropped (the earliest, such as the first-boot password,
// are the ones that matter) and the console is told how many.
type Console struct {
	sinks []*sink
}

type sink struct {
	w   io.Writer
	max int

	mu      sync.Mutex
	queue   [][]byte
	queued  int // bytes in queue
	dropped int // messages dropped since the last report
	busy    bool
	wake    chan struct{}
}

// OpenConsoles opens the given devices, skipping those that are missing;
// with none it writes to stderr.
func OpenConsoles(devices ...string) *Console {
	var ws []io.Writer
	for _, d := range devices {
		if f, err := os.OpenFile(d, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			ws = append(ws, f)
		}
	}
	if len(ws) == 0 {
		ws = append(ws, os.Stderr)
	}
	return NewConsole(DefaultConsoleBuffer, ws...)
}

// NewConsole writes to ws, queueing at most max bytes for each.
func NewConsole(max int, ws ...io.Writer) *Console {
	c := &Console{}
	for _, w := range ws {
		s := &sink{w: w, max: max, wake: make(chan struct{}, 1)}
		c.sinks = append(c.sinks, s)
		go s.drain()
	}
	return c
}

// Write queues p for every console and returns at once.
func (c *Console) Write(p []byte) (int, error) {
	for _, s := range c.sinks {
		s.put(p)
	}
	return len(p), nil
}

// Flush waits until every console has written what was queued, or timeout
// passes; it says whether they all did. The shutdown calls it so the last
// messages are out before the power goes.
func (c *Console) Flush(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for _, s := range c.sinks {
		for {
			s.mu.Lock()
			done := len(s.queue) == 0 && !s.busy
			s.mu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return true
}

func (s *sink) put(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued+len(p) > s.max {
		s.dropped++
		return
	}
	s.queue = append(s.queue, append([]byte(nil), p...))
	s.queued += len(p)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *sink) drain() {
	for range s.wake {
		for {
			s.mu.Lock()
			batch, dropped := s.queue, s.dropped
			s.queue, s.queued, s.dropped = nil, 0, 0
			s.busy = len(batch) > 0 || dropped > 0
			s.mu.Unlock()
			if !s.busy {
				break
			}
			for _, p := range batch {
				s.w.Write(p) // a broken console does not stop the others
			}
			if dropped > 0 {
				fmt.Fprintf(s.w, "keel: %d console messages were dropped: they came faster than this console writes\n", dropped)
			}
			s.mu.Lock()
			s.busy = false
			s.mu.Unlock()
		}
	}
}
