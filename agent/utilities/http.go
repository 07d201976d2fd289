package utilities

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"keel.dev/keel/agent/api"
)

// Request is the body of every utility endpoint; each uses what it needs.
type Request struct {
	Host      string `json:"host"`
	Port      int    `json:"port,omitempty"`       // tcp
	Count     int    `json:"count,omitempty"`      // ping; at most MaxCount
	TimeoutMS int    `json:"timeout_ms,omitempty"` // per attempt; at most MaxTimeout
	MaxHops   int    `json:"max_hops,omitempty"`   // traceroute; at most MaxHops
	Probe     string `json:"probe,omitempty"`      // traceroute: "icmp" (default) or "udp"
	Queries   int    `json:"queries,omitempty"`    // traceroute: probes per hop; at most MaxQueries
}

// Routes registers POST /api/v1/utilities/{ping,traceroute,dns,tcp}. resolver may be
// nil for the default one.
func Routes(mux api.Mux, resolver *net.Resolver) {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	mux.Handle("POST /api/v1/utilities/tcp", handle(func(w http.ResponseWriter, r *http.Request, q Request) {
		if q.Port < 1 || q.Port > 65535 {
			writeError(w, http.StatusBadRequest, "port: must be between 1 and 65535.")
			return
		}
		writeJSON(w, http.StatusOK, TCP(r.Context(), q.Host, q.Port, timeout(q)))
	}))
	mux.Handle("POST /api/v1/utilities/dns", handle(func(w http.ResponseWriter, r *http.Request, q Request) {
		writeJSON(w, http.StatusOK, DNS(r.Context(), resolver, q.Host, timeout(q)))
	}))
	mux.Handle("POST /api/v1/utilities/traceroute", handle(func(w http.ResponseWriter, r *http.Request, q Request) {
		if q.MaxHops < 0 || q.MaxHops > MaxHops {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("max_hops: must be between 1 and %d.", MaxHops))
			return
		}
		if q.Queries < 0 || q.Queries > MaxQueries {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("queries: must be between 1 and %d.", MaxQueries))
			return
		}
		if q.Probe != "" && q.Probe != ProbeICMP && q.Probe != ProbeUDP {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("probe: must be %q or %q.", ProbeICMP, ProbeUDP))
			return
		}
		res, err := Traceroute(r.Context(), resolver, q.Host, TraceOptions{MaxHops: q.MaxHops, Timeout: timeout(q), Probe: q.Probe, Queries: q.Queries})
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("Traceroute failed: %v.", err))
			return
		}
		writeJSON(w, http.StatusOK, res)
	}))
	mux.Handle("POST /api/v1/utilities/ping", handle(func(w http.ResponseWriter, r *http.Request, q Request) {
		if q.Count > MaxCount {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("count: at most %d.", MaxCount))
			return
		}
		res, err := Ping(r.Context(), resolver, q.Host, q.Count, timeout(q))
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("Ping failed: %v.", err))
			return
		}
		writeJSON(w, http.StatusOK, res)
	}))
}

func handle(f func(http.ResponseWriter, *http.Request, Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var q Request
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("The body is not a utility request: %v.", err))
			return
		}
		if q.Host == "" || len(q.Host) > 253 {
			writeError(w, http.StatusBadRequest, "host: is required (a host name or an IP address).")
			return
		}
		if q.TimeoutMS < 0 || time.Duration(q.TimeoutMS)*time.Millisecond > MaxTimeout {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("timeout_ms: must be between 0 and %d.", MaxTimeout.Milliseconds()))
			return
		}
		f(w, r, q)
	})
}

func timeout(q Request) time.Duration { return time.Duration(q.TimeoutMS) * time.Millisecond }

// writeJSON answers through the API's one JSON writer, so every endpoint
// sends the same headers.
func writeJSON(w http.ResponseWriter, code int, v any) { api.WriteJSON(w, code, v) }

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}
