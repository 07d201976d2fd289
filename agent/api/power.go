package api

import (
	"net/http"

	"keel.dev/keel/agent/supervisor"
)

// power answers 202 with {"state": state} and only then runs fn, because fn
// ends the machine and with it the connection: the operator must get the
// answer first.
func (s *Server) power(state string, fn func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if fn == nil {
			writeError(w, http.StatusNotImplemented, "this agent cannot do that; use the serial console's recovery menu")
			return
		}
		if !s.powering.CompareAndSwap(false, true) {
			writeError(w, http.StatusConflict, "the appliance is already rebooting or shutting down; wait for it to come back or go off")
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"state": state})
		if err := http.NewResponseController(w).Flush(); err != nil {
			s.log.Debug("flush power answer", "err", err)
		}
		user := AuthenticatedUser(r.Context())
		// The request's context ends when the handler has returned, that is
		// once the server has finished writing the response.
		done := r.Context().Done()
		supervisor.Go(s.log, "power action "+state, func() {
			<-done
			s.log.Info("power action", "state", state, "user", user)
			if err := fn(); err != nil {
				s.log.Error("power action failed", "state", state, "err", err)
				s.powering.Store(false) // let the operator try again
			}
		})
	}
}
