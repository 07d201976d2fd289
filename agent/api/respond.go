package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// WriteJSON answers with v as JSON: every endpoint of the agent answers
// through it. It encodes before writing anything, so an encoding failure can
// still become a proper 500.
//
// Sentences keep their ">=" readable (no HTML escaping): the content type,
// and the nosniff Server.ServeHTTP sets on every answer, keep a browser
// from reading the answer as HTML.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		code = http.StatusInternalServerError
		b.Reset()
		enc.Encode(Error{Error: "the agent could not encode its answer; report this as a bug"})
	}
	body := b.Bytes()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	// Answers describe the live appliance; a cached one would mislead.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(body)
}

// WriteError answers {"error": msg}; msg is a sentence saying what to do.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) { WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, msg string) { WriteError(w, code, msg) }
