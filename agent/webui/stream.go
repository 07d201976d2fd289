package webui

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// captured keeps an API answer in memory.
type captured struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (c *captured) Header() http.Header {
	if c.h == nil {
		c.h = http.Header{}
	}
	return c.h
}
func (c *captured) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}
func (c *captured) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.body.Write(b)
}
func (c *captured) Flush() {}

func (c *captured) reply() reply {
	code := c.code
	if code == 0 {
		code = http.StatusOK
	}
	a := reply{Code: code, Body: c.body.Bytes()}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(a.Body, &e) == nil {
		a.Sentence = e.Message
		if !a.OK() && e.Error != "" {
			a.Sentence = e.Error
		}
	}
	if !a.OK() && a.Sentence == "" {
		a.Sentence = "the appliance answered " + http.StatusText(code) + "; try again"
	}
	return a
}

// passThrough sends a successful answer straight to the browser and
// keeps a refusal for the page.
type passThrough struct {
	w       http.ResponseWriter
	decided bool
	failed  bool
	refusal captured
}

func (p *passThrough) Header() http.Header {
	if p.failed {
		return p.refusal.Header()
	}
	return p.w.Header()
}

func (p *passThrough) WriteHeader(code int) {
	if p.decided {
		return
	}
	p.decided = true
	if code >= 300 {
		p.failed = true
		p.refusal.WriteHeader(code)
		return
	}
	p.w.WriteHeader(code)
}

func (p *passThrough) Write(b []byte) (int, error) {
	if !p.decided {
		p.WriteHeader(http.StatusOK)
	}
	if p.failed {
		return p.refusal.Write(b)
	}
	return p.w.Write(b)
}

func (p *passThrough) Flush() {
	if !p.failed {
		http.NewResponseController(p.w).Flush()
	}
}

// stream runs req through the API to the browser; a refusal is shown by
// refused with the API's status and sentence.
func (u *UI) stream(w http.ResponseWriter, r *http.Request, ses Session, req *http.Request, refused func(code int, sentence string)) {
	if u.cfg.Do == nil {
		refused(http.StatusNotImplemented, "this appliance's web interface cannot reach its API; use the JSON API")
		return
	}
	// The page's own headers (HTML, no-store) give way to the file's.
	w.Header().Del("Content-Type")
	p := &passThrough{w: w}
	u.cfg.Do(p, r, ses.User, req)
	if p.failed {
		a := p.refusal.reply()
		refused(a.Code, a.Sentence)
	}
}
