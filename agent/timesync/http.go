package timesync

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
)

// Routes registers GET and PUT /api/v1/time and POST /api/v1/time/sync.
// save persists a new server list (the network configuration owns it) and
// may be nil when nothing persists it.
func (s *Service) Routes(mux api.Mux, save func(servers []string) error) {
	mux.Handle("GET /api/v1/time", http.HandlerFunc(s.getTime))
	mux.Handle("PUT /api/v1/time", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.putTime(w, r, save) }))
	mux.Handle("POST /api/v1/time/sync", http.HandlerFunc(s.syncNow))
}

// TimeConfig is the body of PUT /api/v1/time.
type TimeConfig struct {
	Servers []string `json:"servers"`
}

type timeView struct {
	Now     time.Time `json:"now"` // the box's clock, so an operator sees how far off it is
	Servers []string  `json:"servers"`
	Status  Status    `json:"status"`
}

func (s *Service) view() timeView {
	servers, _ := s.Servers()
	return timeView{Now: s.clock.Now().UTC(), Servers: servers, Status: s.Status()}
}

func (s *Service) getTime(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.view())
}

func (s *Service) putTime(w http.ResponseWriter, r *http.Request, save func([]string) error) {
	var c TimeConfig
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("The body is not a time configuration: %v.", err))
		return
	}
	if err := ValidateServers(c.Servers); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if save != nil {
		if err := save(c.Servers); err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("The NTP servers were not saved: %v.", err))
			return
		}
	}
	s.SetServers(c.Servers)
	writeJSON(w, http.StatusOK, s.view())
}

func (s *Service) syncNow(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if _, err := s.Sync(ctx); err != nil {
		writeError(w, http.StatusBadGateway, fmt.Sprintf("The clock was not synchronized: %v.", err))
		return
	}
	writeJSON(w, http.StatusOK, s.view())
}

// ValidateServers checks NTP server names: host names or addresses, with
// an optional port, at most 8 of them.
func ValidateServers(servers []string) error {
	if len(servers) > 8 {
		return fmt.Errorf("servers: %d listed; at most 8 are used", len(servers))
	}
	for i, srv := range servers {
		host := srv
		if h, port, err := net.SplitHostPort(srv); err == nil {
			host = h
			if port == "" {
				return fmt.Errorf("servers[%d]: %q has an empty port", i, srv)
			}
		}
		if net.ParseIP(host) == nil && !validHost(host) {
			return fmt.Errorf("servers[%d]: %q is neither an IP address nor a host name", i, srv)
		}
	}
	return nil
}

func validHost(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// writeJSON answers through the API's one JSON writer, so every endpoint
// sends the same headers.
func writeJSON(w http.ResponseWriter, code int, v any) { api.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}
