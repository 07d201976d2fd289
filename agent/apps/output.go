package apps

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"time"
)

// The application's output goes to the agent's log, which goes to the
// consoles. Like journald's RateLimitBurst, a burst of lines passes and
// then a steady rate; the rest is counted and the count logged, so a
// chatty or hostile application cannot fill the consoles' queues and
// crowd out the agent's own messages.
const (
	outputBurst = 200 // lines
	outputRate  = 20  // lines a second after the burst
)

// lineLimit is a token bucket of lines.
type lineLimit struct {
	tokens     float64
	last       time.Time
	suppressed int
}

func (l *lineLimit) allow(now time.Time) bool {
	if l.last.IsZero() {
		l.tokens = outputBurst
	} else {
		l.tokens += now.Sub(l.last).Seconds() * outputRate
		if l.tokens > outputBurst {
			l.tokens = outputBurst
		}
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false
	}
	l.tokens--
	return true
}

// pumpLines logs r's lines under stream until it ends, within the limit.
func pumpLines(log *slog.Logger, r io.Reader, stream string, now func() time.Time) {
	br := bufio.NewReaderSize(r, 4096)
	var lim lineLimit
	report := func() {
		if lim.suppressed > 0 {
			log.Warn("application output suppressed: it wrote faster than the rate limit", "stream", stream, "lines", lim.suppressed, "limit_per_second", outputRate)
			lim.suppressed = 0
		}
	}
	defer report()
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if lim.allow(now()) {
				report()
				log.Info(string(trimNewline(line)), "stream", stream)
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
