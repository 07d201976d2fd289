// Package pid1 holds what only the init process does: writing to the
// consoles, reaping orphans, and the final sync, unmount and power-off.
package pid1

import (
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Console writes each message to every console the box has (serial and
// screen), so an operator sees it wherever they look.
type Console struct {
	mu  sync.Mutex
	out []io.Writer
}

// OpenConsoles opens the given devices, skipping those that are missing;
// with none it writes to stderr.
func OpenConsoles(devices ...string) *Console {
	c := &Console{}
	for _, d := range devices {
		if f, err := os.OpenFile(d, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			c.out = append(c.out, f)
		}
	}
	if len(c.out) == 0 {
		c.out = append(c.out, os.Stderr)
	}
	return c
}

// Write sends p to every console; a broken console does not stop the others.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.out {
		w.Write(p)
	}
	return len(p), nil
}
