package webui

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"keel.dev/keel/agent/api"
)

// reply is what the API said to a page's call.
type reply struct {
	Code int
	Body []byte
	// Sentence is the API's own words: its error, or its message.
	Sentence string
}

// OK says the call succeeded (200, 201 or 202).
func (a reply) OK() bool { return a.Code >= 200 && a.Code < 300 }

// call runs an API route as the session's user (api.Server.Call), with v
// as its JSON body when not nil.
func (u *UI) call(r *http.Request, ses Session, method, path string, v any) reply {
	var body io.Reader
	ct := ""
	if v != nil {
		b, err := json.Marshal(v)
		if err != nil {
			return reply{Code: http.StatusInternalServerError, Sentence: "the page could not encode its request (" + err.Error() + ")"}
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return u.callRaw(r, ses, method, path, body, ct)
}

func (u *UI) callRaw(r *http.Request, ses Session, method, path string, body io.Reader, ct string) reply {
	if u.cfg.Call == nil {
		return reply{Code: http.StatusNotImplemented, Sentence: "this appliance's web interface cannot reach its API; use the JSON API"}
	}
	code, b := u.cfg.Call(r, ses.User, method, path, body, ct)
	return replyOf(code, b)
}

// replyOf reads the API's sentence out of its answer: its error, or its
// message.
func replyOf(code int, b []byte) reply {
	a := reply{Code: code, Body: b}
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &e) == nil {
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

// get reads an API route's JSON reply into v; it returns the API's
// sentence when it failed.
func (u *UI) get(r *http.Request, ses Session, path string, v any) string {
	a := u.call(r, ses, http.MethodGet, path, nil)
	if !a.OK() {
		return a.Sentence
	}
	if err := json.Unmarshal(a.Body, v); err != nil {
		return "the appliance's reply to " + path + " could not be read (" + err.Error() + ")"
	}
	return ""
}

// Caller is api.Server.Call.
type Caller func(from *http.Request, user, method, path string, body io.Reader, contentType string) (int, []byte)

var _ Caller = (*api.Server)(nil).Call
