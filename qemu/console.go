package qemu

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"sync"
	"time"
)

// tailBytes is how much console output an Expect timeout shows.
const tailBytes = 2048

// console receives QEMU's serial output. It writes the raw bytes to the log
// file and to an optional tee, and keeps a cleaned copy in memory (carriage
// returns and terminal escape sequences removed, so that patterns match GRUB
// and kernel output alike) which Expect scans from its cursor.
type console struct {
	log io.Writer // the serial log file; raw bytes
	tee io.Writer // Config.Console; raw bytes; may be nil

	mu      sync.Mutex
	text    []byte        // cleaned output so far
	cursor  int           // Expect scans text[cursor:]
	changed chan struct{} // closed and replaced on every Write
	filter  escFilter
	logErr  error // first error writing the log file
	// arrivals says when each Write's output arrived: text[:end] had
	// arrived by at. The bench's boot timeline reads it (SeenAt).
	arrivals []arrival
}

type arrival struct {
	end int
	at  time.Time
}

func newConsole(log, tee io.Writer) *console {
	return &console{log: log, tee: tee, changed: make(chan struct{})}
}

// Write never fails, so QEMU's output keeps flowing even when the log file
// or the tee breaks; the log error is kept for Close.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logErr == nil {
		if _, err := c.log.Write(p); err != nil {
			c.logErr = err
		}
	}
	if c.tee != nil {
		c.tee.Write(p) //nolint:errcheck // a broken tee must not stop the VM
	}
	c.text = c.filter.append(c.text, p)
	now := time.Now()
	if n := len(c.arrivals); n > 0 && now.Sub(c.arrivals[n-1].at) < time.Millisecond {
		// Writes within a millisecond share an entry (a time at most 1 ms
		// early), so a burst of small writes adds one entry, not many.
		c.arrivals[n-1].end = len(c.text)
	} else {
		c.arrivals = append(c.arrivals, arrival{end: len(c.text), at: now})
	}
	close(c.changed)
	c.changed = make(chan struct{})
	return len(p), nil
}

// Output returns all cleaned output so far.
func (c *console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.text)
}

// seenAt returns when the first match of re in the whole output (the
// cursor aside) arrived, with its submatches.
func (c *console) seenAt(re *regexp.Regexp) (time.Time, []string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	loc := re.FindSubmatchIndex(c.text)
	if loc == nil {
		return time.Time{}, nil, false
	}
	subs := submatches(c.text, loc)
	i := sort.Search(len(c.arrivals), func(i int) bool { return c.arrivals[i].end >= loc[1] })
	if i == len(c.arrivals) {
		return time.Time{}, subs, false
	}
	return c.arrivals[i].at, subs, true
}

// submatches returns the texts of a FindSubmatchIndex result.
func submatches(text []byte, loc []int) []string {
	subs := make([]string, len(loc)/2)
	for i := range subs {
		if loc[2*i] >= 0 {
			subs[i] = string(text[loc[2*i]:loc[2*i+1]])
		}
	}
	return subs
}

// tail returns the last n bytes of cleaned output.
func (c *console) tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.text
	if len(t) > n {
		t = t[len(t)-n:]
	}
	return string(t)
}

// match looks for the earliest match of any of res in the output after the
// cursor. On a match it moves the cursor past it and returns the index of the
// pattern and its submatches; otherwise it returns -1 and the channel that
// the next Write closes.
func (c *console) match(res []*regexp.Regexp) (int, []string, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rest := c.text[c.cursor:]
	best, bestLoc := -1, []int(nil)
	for i, re := range res {
		loc := re.FindSubmatchIndex(rest)
		if loc != nil && (bestLoc == nil || loc[0] < bestLoc[0]) {
			best, bestLoc = i, loc
		}
	}
	if best < 0 {
		return -1, nil, c.changed
	}
	subs := submatches(rest, bestLoc)
	end := bestLoc[1]
	if end == bestLoc[0] && end < len(rest) {
		// An empty match must still move the cursor, or the next Expect of
		// the same pattern would match at the same place forever.
		end++
	}
	c.cursor += end
	return best, subs, nil
}

// expect waits until one of res matches after the cursor, the timeout
// passes, or exited is closed (QEMU is gone and its output fully written).
func (c *console) expect(res []*regexp.Regexp, timeout time.Duration, exited <-chan struct{}) (int, []string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		i, subs, changed := c.match(res)
		if i >= 0 {
			return i, subs, nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return -1, nil, fmt.Errorf("qemu: no match for %s within %v; last console output:\n%s", patterns(res), timeout, c.tail(tailBytes))
		case <-exited:
			// The process has exited and Wait has collected all output: one
			// last look, then give up without waiting for the timeout.
			if i, subs, _ := c.match(res); i >= 0 {
				return i, subs, nil
			}
			return -1, nil, fmt.Errorf("qemu: VM exited before a match for %s; last console output:\n%s", patterns(res), c.tail(tailBytes))
		}
	}
}

func patterns(res []*regexp.Regexp) string {
	if len(res) == 1 {
		return fmt.Sprintf("%q", res[0].String())
	}
	s := ""
	for i, re := range res {
		if i > 0 {
			s += " or "
		}
		s += fmt.Sprintf("%q", re.String())
	}
	return s
}

// escFilter removes carriage returns, NULs and ANSI/VT100 escape sequences
// from a byte stream. It keeps state between calls because a sequence can be
// split across two reads.
type escFilter struct {
	state int
}

const (
	escNone  = iota
	escStart // after ESC
	escCSI   // after ESC [
	escInter // after ESC and an intermediate byte, e.g. ESC ( B
	escOSC   // after ESC ]: until BEL or ESC \
)

func (f *escFilter) append(dst, p []byte) []byte {
	for _, b := range p {
		switch f.state {
		case escNone:
			switch b {
			case 0x1b:
				f.state = escStart
			case '\r', 0:
				// Dropped: guests end lines with \r\n, and patterns are
				// written for \n.
			default:
				dst = append(dst, b)
			}
		case escStart:
			switch {
			case b == '[':
				f.state = escCSI
			case b == ']':
				f.state = escOSC
			case b >= 0x20 && b <= 0x2f:
				f.state = escInter
			default:
				f.state = escNone
			}
		case escCSI:
			if b >= 0x40 && b <= 0x7e {
				f.state = escNone
			}
		case escInter:
			if b >= 0x30 && b <= 0x7e {
				f.state = escNone
			}
		case escOSC:
			switch b {
			case 0x07:
				f.state = escNone
			case 0x1b:
				// ESC \ ends it too; escStart's default case swallows
				// the backslash.
				f.state = escStart
			}
		}
	}
	return dst
}
