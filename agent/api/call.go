package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
)

// Call runs the API's route for method and path in process, as user, who
// the caller (the web interface) has authenticated already. It is how
// every page makes its changes: the same handler as the JSON API's, with
// the same checks, the same audit entry and the same sentence on failure.
// from is the browser's request, for its client address and context.
func (s *Server) Call(from *http.Request, user, method, path string, body io.Reader, contentType string) (int, []byte) {
	r, err := http.NewRequest(method, path, body)
	if err != nil {
		return http.StatusBadRequest, mustJSON(Error{Error: "the page asked for an invalid request (" + err.Error() + "); reload it"})
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	var rec recorder
	s.Do(&rec, from, user, r)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	return rec.code, rec.body.Bytes()
}

// Do is Call with a request the caller prepared (its own headers) and
// the answer written to w as it comes: a download streams through to the
// browser, memory flat.
func (s *Server) Do(w http.ResponseWriter, from *http.Request, user string, r *http.Request) {
	r = r.WithContext(context.WithValue(from.Context(), internalKey{}, user))
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength == 0 {
		r.ContentLength = -1 // a stream of unknown length, such as an upload's file
	}
	r.RemoteAddr = from.RemoteAddr
	r.Host = from.Host
	r.TLS = from.TLS
	s.ServeHTTP(w, r)
}

// recorder keeps an answer in memory; Call's answers are small JSON.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header {
	if r.header == nil {
		r.header = http.Header{}
	}
	return r.header
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(b)
}

// Flush is a no-op: the whole answer is read at the end.
func (r *recorder) Flush() {}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v) // plain structs of strings: cannot fail
	return b
}
