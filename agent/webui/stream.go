package webui

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
)

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
	return replyOf(code, c.body.Bytes())
}

// streamedForm reads a multipart form's fields up to its file part
// (named file), checking the session's token, which the form sends
// first; the part is left to stream. A false return has answered.
func (u *UI) streamedForm(w http.ResponseWriter, r *http.Request, ses Session, file string, refused func(msg string)) (map[string]string, *multipart.Part, bool) {
	mr, err := r.MultipartReader()
	if err != nil {
		refused("send the file with the page's form")
		return nil, nil, false
	}
	fields := map[string]string{}
	for {
		p, err := mr.NextPart()
		if err != nil {
			refused("the form arrived without its file; choose the file and try again")
			return nil, nil, false
		}
		if p.FormName() != file {
			if len(fields) >= 16 {
				refused("the form has more fields than the page sends; reload the page and try again")
				return nil, nil, false
			}
			b, _ := io.ReadAll(io.LimitReader(p, 4<<10))
			fields[p.FormName()] = string(b)
			continue
		}
		if !ses.ValidToken(fields["csrf"]) {
			u.render(w, http.StatusForbidden, "error", page{Session: &ses, Error: "this form is out of date or did not come from the appliance's own page; reload the page and try again"})
			return nil, nil, false
		}
		return fields, p, true
	}
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
