package api

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Bounds on reading what is left of an upload the agent refused. Clients
// that send the whole body before reading the answer (Python's urllib,
// browsers on large files) never see an answer sent while they still
// send: the server's close resets the connection under them. So the rest
// is read and thrown away first, but not forever: a client that stops
// sending is dropped after DrainIdle, and a slow one after DrainTime.
const (
	DrainTime = 60 * time.Second
	DrainIdle = 10 * time.Second
)

// Drain bounds DiscardBody; zero fields take the defaults above.
type Drain struct {
	Idle  time.Duration // longest wait for the next bytes
	Total time.Duration // longest the whole discard may take
	// Max is how many bytes at most are read when the request declared
	// no length (a declared length bounds the body already); 0: 4 GiB.
	Max int64
}

// ExpectsContinue reports whether the client waits for "100 Continue"
// before it sends the body. Answering such a request without reading the
// body refuses it before a byte of the payload travels: Go's server sends
// the 100 only when the handler first reads.
func ExpectsContinue(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Expect"), "100-continue")
}

// DiscardBody reads what is left of r's body and throws it away, so that
// the answer written next reaches a client that sends everything before it
// reads. It returns the bytes discarded, and an error when it stopped
// early: the client went quiet for d.Idle, took longer than d.Total, sent
// more than d.Max, or the connection broke. The answer should be written
// either way; the server closes a connection whose body was not read to
// its end. Memory stays flat: the bytes go through one small buffer.
func DiscardBody(w http.ResponseWriter, r *http.Request, d Drain) (int64, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return 0, nil
	}
	if d.Idle <= 0 {
		d.Idle = DrainIdle
	}
	if d.Total <= 0 {
		d.Total = DrainTime
	}
	if d.Max <= 0 {
		d.Max = 4 << 30
	}
	rc := http.NewResponseController(w)
	end := time.Now().Add(d.Total)
	defer rc.SetReadDeadline(time.Time{})
	buf := make([]byte, 32<<10)
	var n int64
	for {
		next := time.Now().Add(d.Idle)
		if next.After(end) {
			next = end
		}
		if err := rc.SetReadDeadline(next); err != nil {
			// Without deadlines (a test recorder) an unbounded read could
			// hang: leave the rest to the server.
			return n, err
		}
		k, err := r.Body.Read(buf)
		n += int64(k)
		switch {
		case errors.Is(err, io.EOF):
			return n, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			if !time.Now().Before(end) {
				return n, errors.New("the upload took longer than the time allowed to discard it")
			}
			return n, errors.New("the client stopped sending")
		case err != nil:
			return n, err
		case n > d.Max:
			return n, errors.New("the upload is longer than the most the agent discards")
		}
	}
}
