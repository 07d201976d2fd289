// Package peerkey owns the inter-appliance pre-shared key: the secret two
// appliances of a failover pair prove to each other. It is generated on
// one box (shown once) and pasted into the other; afterwards only its
// fingerprint is shown, so an operator can compare the two boxes by eye
// without the key appearing on a screen again.
//
// # HTTP
//
//	GET  /api/v1/peer-key           200 {"set": bool, "fingerprint": "…"}
//	POST /api/v1/peer-key/generate  200 {"key": "…", "fingerprint": "…"}: the key is shown this once
//	PUT  /api/v1/peer-key           {"key": "…"} → 200 {"set": true, "fingerprint": "…"}
package peerkey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/atomicfile"
)

// Store keeps the key in a file (mode 0600).
type Store struct {
	Path string

	mu  sync.Mutex
	key string
}

// Load reads the key; a missing file is no key yet.
func (s *Store) Load() error {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("peer key: read: %w", err)
	}
	s.mu.Lock()
	s.key = strings.TrimSpace(string(data))
	s.mu.Unlock()
	return nil
}

// Key is the key, or "" when none is set.
func (s *Store) Key() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.key
}

// Fingerprint identifies a key without showing it: the first 16 hex
// digits of its SHA-256, in groups of four.
func Fingerprint(key string) string {
	if key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	h := hex.EncodeToString(sum[:8])
	return h[0:4] + "-" + h[4:8] + "-" + h[8:12] + "-" + h[12:16]
}

// ErrInvalid is a key that cannot be used; the message says why.
var ErrInvalid = errors.New("the key must be 24 to 256 printable characters without spaces; generate one on the other appliance and paste it whole")

// Set saves key.
func (s *Store) Set(key string) error {
	key = strings.TrimSpace(key)
	if len(key) < 24 || len(key) > 256 || strings.ContainsFunc(key, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return ErrInvalid
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := atomicfile.Write(s.Path, []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("peer key: save: %w", err)
	}
	s.key = key
	return nil
}

// Generate makes, saves and returns a new random key (256 bits).
func (s *Store) Generate() (string, error) {
	var b [32]byte
	rand.Read(b[:])
	key := base64.RawURLEncoding.EncodeToString(b[:])
	return key, s.Set(key)
}

// View is GET /api/v1/peer-key.
type View struct {
	Set         bool   `json:"set"`
	Fingerprint string `json:"fingerprint"`
	Key         string `json:"key,omitempty"` // only in the answer to generate
}

// Routes registers the peer-key routes.
func (s *Store) Routes(mux api.Mux) {
	mux.Handle("GET /api/v1/peer-key", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := s.Key()
		api.WriteJSON(w, http.StatusOK, View{Set: k != "", Fingerprint: Fingerprint(k)})
	}))
	mux.Handle("POST /api/v1/peer-key/generate", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, err := s.Generate()
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, "the key could not be saved ("+err.Error()+"); try again")
			return
		}
		api.WriteJSON(w, http.StatusOK, View{Set: true, Fingerprint: Fingerprint(k), Key: k})
	}))
	mux.Handle("PUT /api/v1/peer-key", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Key string `json:"key"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			api.WriteError(w, http.StatusBadRequest, `send {"key": "…"} as JSON`)
			return
		}
		switch err := s.Set(body.Key); {
		case errors.Is(err, ErrInvalid):
			api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Fields: []api.FieldError{{Field: "key", Problem: err.Error()}}})
		case err != nil:
			api.WriteError(w, http.StatusInternalServerError, "the key could not be saved ("+err.Error()+"); try again")
		default:
			api.WriteJSON(w, http.StatusOK, View{Set: true, Fingerprint: Fingerprint(s.Key())})
		}
	}))
}
