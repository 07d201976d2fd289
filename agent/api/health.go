package api

import (
	"net/http"
)

// healthz is unauthenticated so that supervisors and load balancers can
// probe it; it says nothing beyond healthy or why not.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Healthy != nil {
		if err := s.cfg.Healthy(); err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("ok\n"))
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	var v any = struct{}{}
	if s.cfg.Status != nil {
		v = s.cfg.Status()
	}
	writeJSON(w, http.StatusOK, v)
}
