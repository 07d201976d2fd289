package updates

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultResumes is how often a download that broke off is resumed.
const DefaultResumes = 5

// download reads a package from the update server. When the connection
// drops it asks for the rest with a Range request (If-Range on the ETag, so
// a file replaced in between is not spliced), so an interrupted download
// goes on where it stopped instead of starting over. At the end it checks
// the file's size and SHA-256 against the catalog.
type download struct {
	ctx     context.Context
	client  *http.Client
	url     string
	size    int64
	sha256  string
	resumes int // how many resumes are allowed
	log     *slog.Logger

	body  io.ReadCloser
	etag  string
	off   int64 // bytes received and delivered to the reader
	tries int   // resumes used
	h     hash.Hash
	err   error // sticky: io.EOF after a verified end, or the failure
}

func newDownload(ctx context.Context, client *http.Client, url string, size int64, sum string, resumes int, log *slog.Logger) *download {
	return &download{ctx: ctx, client: client, url: url, size: size, sha256: sum, resumes: resumes, log: log, h: sha256.New()}
}

func (d *download) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	for {
		if d.off == d.size {
			return 0, d.finish()
		}
		if d.body == nil {
			err := d.open()
			var unreachable *unreachableError
			if errors.As(err, &unreachable) && d.off > 0 && d.tries < d.resumes && d.ctx.Err() == nil {
				// The server may be back in a moment: that is one resume.
				d.tries++
				d.log.Warn("update server unreachable; retrying", "url", d.url, "at", d.off, "err", unreachable.err, "resume", d.tries)
				if !d.sleep(time.Duration(d.tries) * time.Second) {
					d.err = d.ctx.Err()
					return 0, d.err
				}
				continue
			}
			if err != nil {
				d.err = err
				return 0, err
			}
		}
		if rest := d.size - d.off; int64(len(p)) > rest {
			p = p[:rest]
		}
		n, err := d.body.Read(p)
		d.off += int64(n)
		d.h.Write(p[:n])
		if d.off == d.size {
			// Check with the last bytes: the reader stops at the size
			// (io.ReadFull of what it needs) and never asks for the end.
			// A mismatch holds those bytes back, as io.ReadFull drops an
			// error that comes with a full buffer; io.EOF follows a match.
			if err := d.finish(); err != io.EOF {
				return 0, err
			}
			return n, nil
		}
		if err == io.EOF && d.off < d.size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			d.body.Close()
			d.body = nil
			if d.ctx.Err() != nil {
				d.err = d.ctx.Err()
				return n, d.err
			}
			if d.tries >= d.resumes {
				d.err = fmt.Errorf("the download of %s broke off at byte %d of %d (%v) and did not resume after %d tries; check the network and try again", d.url, d.off, d.size, err, d.tries)
				return n, d.err
			}
			d.tries++
			d.log.Warn("download broke off; resuming", "url", d.url, "at", d.off, "size", d.size, "err", err, "resume", d.tries)
			if n > 0 {
				return n, nil
			}
			if !d.sleep(time.Duration(d.tries) * 500 * time.Millisecond) {
				d.err = d.ctx.Err()
				return 0, d.err
			}
			continue
		}
		if n > 0 || err == nil {
			return n, nil
		}
	}
}

func (d *download) sleep(t time.Duration) bool {
	select {
	case <-time.After(t):
		return true
	case <-d.ctx.Done():
		return false
	}
}

// open requests the file from d.off on.
func (d *download) open() error {
	req, err := http.NewRequestWithContext(d.ctx, "GET", d.url, nil)
	if err != nil {
		return err
	}
	if d.off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", d.off))
		if d.etag != "" {
			req.Header.Set("If-Range", d.etag)
		}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return &unreachableError{url: d.url, err: err}
	}
	switch {
	case d.off == 0 && resp.StatusCode == http.StatusOK:
		d.etag = resp.Header.Get("ETag")
		if resp.ContentLength >= 0 && resp.ContentLength != d.size {
			resp.Body.Close()
			return fmt.Errorf("%w: %s has %d bytes but the catalog says %d; check for updates again", ErrServer, d.url, resp.ContentLength, d.size)
		}
	case d.off > 0 && resp.StatusCode == http.StatusPartialContent:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != d.off {
			resp.Body.Close()
			return fmt.Errorf("%w: the server resumed %s at the wrong place (%q, wanted byte %d)", ErrServer, d.url, resp.Header.Get("Content-Range"), d.off)
		}
	case d.off > 0 && resp.StatusCode == http.StatusOK:
		resp.Body.Close()
		return fmt.Errorf("%w: %s changed on the server during the download; check for updates again", ErrServer, d.url)
	default:
		resp.Body.Close()
		return fmt.Errorf("%w: the update server answered %s for %s", ErrServer, resp.Status, d.url)
	}
	d.body = resp.Body
	return nil
}

// finish checks the whole file once all of it was read and sets d.err:
// io.EOF for a match.
func (d *download) finish() error {
	if d.body != nil {
		d.body.Close()
		d.body = nil
	}
	if got := hex.EncodeToString(d.h.Sum(nil)); got != d.sha256 {
		d.err = fmt.Errorf("%w: %s has SHA-256 %s but the catalog says %s; check for updates again", ErrServer, d.url, got, d.sha256)
		return d.err
	}
	d.err = io.EOF
	d.log.Info("download complete", "url", d.url, "size", d.size, "resumes", d.tries)
	return io.EOF
}

func (d *download) Close() error {
	if d.body != nil {
		return d.body.Close()
	}
	return nil
}

// unreachableError is a request that got no answer at all.
type unreachableError struct {
	url string
	err error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("%v: the update server did not answer for %s (%v); check the network and try again", ErrServer, e.url, e.err)
}

func (e *unreachableError) Unwrap() error { return ErrServer }

// rangeStart parses "bytes START-END/SIZE".
func rangeStart(cr string) (int64, bool) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, false
	}
	s, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
