package failover

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
)

// Status is GET /api/v1/failover (and the failover part of the status).
type Status struct {
	Role       string          `json:"role"` // "none", "primary" or "backup"
	Serial     string          `json:"serial"`
	Epoch      uint64          `json:"epoch"`
	Since      time.Time       `json:"since,omitzero"`      // the relationship's start
	RoleSince  time.Time       `json:"role_since,omitzero"` // the role's
	LastChange string          `json:"last_change,omitempty"`
	Peer       *PeerStatus     `json:"peer,omitempty"`
	Reverse    *Peer           `json:"reverse,omitempty"`
	Shared     []SharedStatus  `json:"shared"`
	Settings   Settings        `json:"settings"`
	Automatic  AutomaticStatus `json:"automatic"`
	Syncing    bool            `json:"syncing"`
	LastSync   *SyncReport     `json:"last_sync,omitempty"`
	LastOK     *SyncReport     `json:"last_ok,omitempty"`
	NextSync   time.Time       `json:"next_sync,omitzero"`
	Diverged   string          `json:"diverged,omitempty"`
	Snapshots  []Snapshot      `json:"snapshots"`
	Message    string          `json:"message"` // a sentence
}

// PeerStatus is the peer as this box sees it.
type PeerStatus struct {
	Peer
	// Heard is when its last heartbeat that answered one of ours came;
	// Answering says whether that was within the detection time.
	Heard     time.Time `json:"heard,omitzero"`
	Answering bool      `json:"answering"`
	Role      string    `json:"role,omitempty"` // as its heartbeats say
	Epoch     uint64    `json:"epoch,omitempty"`
}

// SharedStatus is a shared address and whether this box holds it.
type SharedStatus struct {
	SharedAddress
	Held  bool   `json:"held"`
	Error string `json:"error,omitempty"`
}

// AutomaticStatus says what automatic failover does now.
type AutomaticStatus struct {
	Enabled bool   `json:"enabled"`
	Waiting string `json:"waiting,omitempty"` // why the backup does not take over though the primary is silent
}

// Status describes the relationship now. held reports whether this box
// holds a shared address (floatip's).
func (s *Service) Status(held func(SharedAddress) bool) Status {
	st := s.State()
	s.mu.Lock()
	seen, waiting, syncing, next := s.peerSeen, s.held, s.syncing, s.nextSync
	errs := map[string]string{}
	for k, v := range s.addrErrs {
		errs[k] = v
	}
	s.mu.Unlock()
	out := Status{Role: st.Role.String(), Serial: s.Serial, Epoch: st.Epoch, Since: st.Since, RoleSince: st.RoleSince, LastChange: st.LastChange,
		Reverse: st.Reverse, Settings: st.Settings, Syncing: syncing, LastSync: st.LastSync, LastOK: st.LastOK, Diverged: st.Diverged,
		Snapshots: s.Snapshots(), Shared: []SharedStatus{}}
	out.Automatic.Enabled = st.Settings.Automatic
	if st.In() {
		out.Automatic.Waiting = waiting
		p := &PeerStatus{Peer: *st.Peer, Heard: seen.at}
		if !seen.at.IsZero() {
			p.Answering = s.now().Sub(seen.at) < st.Settings.DetectionTime.D()
			p.Role, p.Epoch = seen.role.String(), seen.epoch
		}
		out.Peer = p
		for _, a := range st.Shared {
			ss := SharedStatus{SharedAddress: a, Error: errs[a.Address]}
			if held != nil {
				ss.Held = held(a)
			}
			out.Shared = append(out.Shared, ss)
		}
		if st.Role == RoleBackup {
			out.NextSync = next
		}
	}
	switch {
	case !st.In():
		out.Message = "This appliance is not in a failover relationship."
	case st.Role == RolePrimary:
		out.Message = fmt.Sprintf("This appliance is the primary; %s is its backup.", st.Peer.Serial)
	default:
		out.Message = fmt.Sprintf("This appliance is the backup of %s: its application is held, and the settings it takes from the primary cannot be changed here.", st.Peer.Serial)
	}
	return out
}

// Routes registers the operator's routes on mux and the peer protocol
// on public (the API's routes without user authentication: the peer
// protocol authenticates itself). held and defaultShared come from the
// floating-address service and the network configuration.
func (s *Service) Routes(mux api.Mux, public func(pattern string, h http.Handler), held func(SharedAddress) bool, defaultShared func() []SharedAddress) {
	mux.Handle("GET /api/v1/failover", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, s.Status(held))
	}))
	mux.Handle("POST /api/v1/failover/establish", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Settings left out keep the ones this box has.
		set := s.State().Settings
		req := EstablishRequest{Settings: &set}
		if !decodeOperator(w, r, &req) {
			return
		}
		var def []SharedAddress
		if defaultShared != nil {
			def = defaultShared()
		}
		if _, err := s.Establish(r.Context(), req, def); err != nil {
			answerError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"message": "the relationship is established: this appliance is the primary; the backup pulls its first sync in about a minute (or use Sync Now on it)", "status": s.Status(held)})
	}))
	mux.Handle("POST /api/v1/failover/sync", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		job, err := s.SyncNow()
		if err != nil {
			answerError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusAccepted, api.Accepted{Job: job.ID(), Message: "the sync started; follow it with GET /api/v1/jobs/" + job.ID()})
	}))
	mux.Handle("POST /api/v1/failover/become-primary", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req BecomePrimaryRequest
		if r.ContentLength != 0 && !decodeOperator(w, r, &req) {
			return
		}
		_, msg, err := s.BecomePrimary(r.Context(), req)
		if err != nil {
			answerError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"message": msg, "status": s.Status(held)})
	}))
	mux.Handle("POST /api/v1/failover/break", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		msg, err := s.Break(r.Context())
		if err != nil {
			answerError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"message": msg})
	}))
	mux.Handle("PUT /api/v1/failover/settings", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		set := s.State().Settings
		if !decodeOperator(w, r, &set) {
			return
		}
		msg, err := s.SetSettings(r.Context(), set)
		if err != nil {
			answerError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"message": msg, "settings": s.State().Settings})
	}))
	mux.Handle("GET /api/v1/failover/snapshots", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, map[string]any{"snapshots": s.Snapshots()})
	}))
	mux.Handle("GET /api/v1/failover/snapshots/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !validSnapshotName(name) {
			api.WriteError(w, http.StatusNotFound, "there is no snapshot of that name; GET /api/v1/failover/snapshots lists them")
			return
		}
		if !s.HasSnapshot(name) {
			api.WriteError(w, http.StatusNotFound, "there is no snapshot of that name; GET /api/v1/failover/snapshots lists them")
			return
		}
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.tar"`)
		if err := s.WriteSnapshot(w, name); err != nil {
			// Mid-stream: cut the answer so the download shows as broken.
			s.log().Error("snapshot download", "name", name, "err", err)
			panic(http.ErrAbortHandler)
		}
	}))
	mux.Handle("DELETE /api/v1/failover/snapshots/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteSnapshot(r.PathValue("name")); err != nil {
			api.WriteError(w, http.StatusNotFound, "there is no snapshot of that name")
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]string{"message": "the snapshot is deleted"})
	}))

	public("POST "+peerPrefix+"establish", s.peerHandler(false, s.peerEstablish))
	public("POST "+peerPrefix+"confirm", s.peerHandler(false, s.peerConfirm))
	public("GET "+peerPrefix+"state", s.peerHandler(true, s.peerState))
	public("POST "+peerPrefix+"sync/config", s.peerHandler(true, s.serveConfig))
	public("POST "+peerPrefix+"sync/manifest", s.peerHandler(true, s.serveManifest))
	public("POST "+peerPrefix+"sync/hashes", s.peerHandler(true, s.serveHashes))
	public("POST "+peerPrefix+"sync/blocks", s.peerHandler(true, s.serveBlocks))
	public("POST "+peerPrefix+"demote", s.peerHandler(true, s.peerDemote))
	public("POST "+peerPrefix+"break", s.peerHandler(true, s.peerBreak))
	public("POST "+peerPrefix+"settings", s.peerHandler(true, s.peerSettings))
}

func decodeOperator(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the body cannot be read: "+err.Error()+"; see the API documentation for its fields")
		return false
	}
	return true
}

func answerError(w http.ResponseWriter, err error) {
	var fe fieldError
	var rf *refusal
	switch {
	case errors.As(err, &fe):
		api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: sentence(fe.Error()), Fields: []api.FieldError{{Field: fe.field, Problem: fe.problem}}})
	case errors.As(err, &rf):
		api.WriteError(w, rf.code, sentence(rf.sentence))
	default:
		api.WriteError(w, http.StatusInternalServerError, sentence(err.Error()))
	}
}

func sentence(s string) string {
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}
