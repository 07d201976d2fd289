package failover

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
)

// MaxClockSkew is how far apart the two boxes' clocks may be when the
// relationship is made.
const MaxClockSkew = 30 * time.Second

// EstablishRequest is POST /api/v1/failover/establish, made on the box
// that is to be primary: how it reaches the backup, and how the backup
// reaches it back.
type EstablishRequest struct {
	PeerAddress    string `json:"peer_address"`
	PeerPort       int    `json:"peer_port,omitempty"` // default 443
	ReverseAddress string `json:"reverse_address"`
	ReversePort    int    `json:"reverse_port,omitempty"` // default 443
	// Shared are the addresses that move with the primary role; absent:
	// the floating addresses this box's network configuration has.
	Shared   []SharedAddress `json:"shared,omitempty"`
	Settings *Settings       `json:"settings,omitempty"`
}

// establishAsk is what the primary tells the backup.
type establishAsk struct {
	Serial   string          `json:"serial"`
	Token    string          `json:"token"`
	Versions Versions        `json:"versions"`
	ClockMS  int64           `json:"clock_ms"`
	Reverse  Peer            `json:"reverse"` // Address and Port
	Epoch    uint64          `json:"epoch"`
	Settings Settings        `json:"settings"`
	Shared   []SharedAddress `json:"shared"`
}

type establishAnswer struct {
	Serial   string   `json:"serial"`
	Versions Versions `json:"versions"`
}

type confirmAsk struct {
	Token  string `json:"token"`
	Serial string `json:"serial"`
}

// pendingEstablish is an establish under way on the primary, waiting for
// the backup to call back over the reverse path.
type pendingEstablish struct {
	cert      string // the certificate the backup presented
	confirmed string // the serial that called back
}

func (r *EstablishRequest) check() error {
	if r.PeerPort == 0 {
		r.PeerPort = 443
	}
	if r.ReversePort == 0 {
		r.ReversePort = 443
	}
	switch {
	case strings.TrimSpace(r.PeerAddress) == "":
		return fieldError{"peer_address", "is required: the backup's own host name or IP address (not a shared one)"}
	case strings.TrimSpace(r.ReverseAddress) == "":
		return fieldError{"reverse_address", "is required: this appliance's own host name or IP address, as the backup reaches it"}
	case r.PeerPort < 1 || r.PeerPort > 65535:
		return fieldError{"peer_port", "must be a TCP port, 1 to 65535"}
	case r.ReversePort < 1 || r.ReversePort > 65535:
		return fieldError{"reverse_port", "must be a TCP port, 1 to 65535"}
	}
	for _, a := range r.Shared {
		if _, err := a.Prefix(); err != nil {
			return fieldError{"shared", fmt.Sprintf("%q is not an address in CIDR form such as 192.0.2.100/24", a.Address)}
		}
	}
	if r.Settings != nil {
		return r.Settings.Check()
	}
	return nil
}

// Establish makes this box the primary of a relationship with the box at
// req.PeerAddress: both prove the shared key to each other, the backup
// checks the reverse path and the versions and clocks, and each pins the
// other's certificate.
func (s *Service) Establish(ctx context.Context, req EstablishRequest, defaultShared []SharedAddress) (State, error) {
	if err := req.check(); err != nil {
		return State{}, err
	}
	st := s.State()
	if st.In() {
		return st, &refusal{http.StatusConflict, fmt.Sprintf("this appliance is already %s; break that relationship first", describeRole(st))}
	}
	set := st.Settings
	if req.Settings != nil {
		set = *req.Settings
	}
	shared := req.Shared
	if shared == nil {
		shared = defaultShared
	}
	token := newNonce()
	pe := &pendingEstablish{}
	s.mu.Lock()
	s.pending[token] = pe
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.pending, token)
		s.mu.Unlock()
	}()
	epoch := st.Epoch + 1
	ask := establishAsk{Serial: s.Serial, Token: token, Versions: s.Versions(), ClockMS: s.now().UnixMilli(),
		Reverse: Peer{Address: req.ReverseAddress, Port: req.ReversePort}, Epoch: epoch, Settings: set, Shared: shared}
	a, err := s.call(ctx, peerCall{Addr: netJoin(req.PeerAddress, req.PeerPort), Method: "POST", Path: peerPrefix + "establish", Body: ask,
		OnCert: func(fp string) { s.mu.Lock(); pe.cert = fp; s.mu.Unlock() }})
	if err != nil {
		return st, &refusal{http.StatusBadGateway, "the relationship was not made: " + err.Error()}
	}
	var ans establishAnswer
	if err := a.decode(&ans); err != nil {
		var pr *peerRefusal
		if errors.As(err, &pr) {
			return st, &refusal{http.StatusConflict, "the relationship was not made: " + pr.Sentence}
		}
		return st, &refusal{http.StatusBadGateway, "the relationship was not made: " + err.Error()}
	}
	s.mu.Lock()
	confirmed := pe.confirmed
	s.mu.Unlock()
	if confirmed != a.Serial || ans.Serial != a.Serial {
		return st, &refusal{http.StatusBadGateway, "the relationship was not made: the backup did not call back over the reverse address"}
	}
	err = s.update(func(cur *State) {
		cur.Role, cur.Epoch = RolePrimary, epoch
		cur.Peer = &Peer{Serial: a.Serial, Address: req.PeerAddress, Port: req.PeerPort, CertSHA256: a.Cert}
		cur.Reverse = &Peer{Address: req.ReverseAddress, Port: req.ReversePort}
		cur.Since, cur.RoleSince = s.now().UTC(), s.now().UTC()
		cur.LastChange = "the relationship with " + a.Serial + " was established, with this appliance as primary"
		cur.Shared, cur.Settings = shared, set
		cur.LastSync, cur.LastOK, cur.Diverged = nil, nil, ""
	})
	if err != nil {
		return st, fmt.Errorf("the backup took the relationship, but this appliance could not save it (%w); break it on the backup and try again", err)
	}
	s.log().Warn("failover relationship established", "backup", a.Serial, "role", RolePrimary)
	s.takeAddresses(false)
	signal(s.restartc)
	return s.State(), nil
}

// peerEstablish is the backup's side of Establish.
func (s *Service) peerEstablish(w http.ResponseWriter, r *peerRequest) {
	var ask establishAsk
	if err := decodeBody(r, &ask); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the establish request cannot be read: "+err.Error())
		return
	}
	refuse := func(format string, args ...any) {
		api.WriteError(w, http.StatusConflict, fmt.Sprintf(format, args...))
	}
	st := s.State()
	switch {
	case st.In():
		refuse("%s is already %s; break that relationship there first", s.Serial, describeRole(st))
		return
	case ask.Serial == s.Serial:
		refuse("%s cannot be its own backup: the peer address leads back to the primary itself", s.Serial)
		return
	}
	if mine := s.Versions(); mine != ask.Versions {
		refuse("%s runs %s, but %s runs %s: a pair must be built with the same installed packages; upgrade one of them first", ask.Serial, ask.Versions, s.Serial, mine)
		return
	}
	if skew := time.Duration(math.Abs(float64(s.now().UnixMilli()-ask.ClockMS))) * time.Millisecond; skew > MaxClockSkew {
		refuse("the clocks of %s and %s differ by %s, more than %s: synchronize both with NTP and try again", ask.Serial, s.Serial, skew.Round(time.Second), MaxClockSkew)
		return
	}
	if err := ask.Settings.Check(); err != nil {
		refuse("the settings cannot be used: %v", err)
		return
	}
	// The reverse path must reach the very box that asks: pinned to the
	// certificate it presented here.
	c, err := s.call(r.Context(), peerCall{Addr: netJoin(ask.Reverse.Address, ask.Reverse.Port), Pin: r.Cert, Method: "POST", Path: peerPrefix + "confirm", Body: confirmAsk{Token: ask.Token, Serial: s.Serial}})
	if err != nil {
		refuse("%s cannot reach %s back at %s: %v", s.Serial, ask.Serial, netJoin(ask.Reverse.Address, ask.Reverse.Port), err)
		return
	}
	if err := c.decode(nil); err != nil {
		refuse("%s could not confirm the relationship over the reverse address: %v", s.Serial, err)
		return
	}
	err = s.update(func(cur *State) {
		cur.Role, cur.Epoch = RoleBackup, max(cur.Epoch, ask.Epoch)
		cur.Peer = &Peer{Serial: ask.Serial, Address: ask.Reverse.Address, Port: ask.Reverse.Port, CertSHA256: r.Cert}
		cur.Reverse = nil
		cur.Since, cur.RoleSince = s.now().UTC(), s.now().UTC()
		cur.LastChange = "the relationship with " + ask.Serial + " was established, with this appliance as backup"
		cur.Shared, cur.Settings = ask.Shared, ask.Settings
		cur.LastSync, cur.LastOK, cur.Diverged = nil, nil, ""
	})
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "the backup could not save the relationship: "+err.Error())
		return
	}
	s.mu.Lock()
	s.nextSync = s.now().Add(FirstSyncDelay)
	s.mu.Unlock()
	s.log().Warn("failover relationship established", "primary", ask.Serial, "role", RoleBackup)
	s.releaseAddresses()
	if s.App != nil {
		if err := s.App.Hold(holdReason(s.State())); err != nil {
			s.log().Error("the application was not held on the backup", "err", err)
		}
	}
	signal(s.restartc)
	api.WriteJSON(w, http.StatusOK, establishAnswer{Serial: s.Serial, Versions: s.Versions()})
}

// peerConfirm is the primary's side of the reverse check.
func (s *Service) peerConfirm(w http.ResponseWriter, r *peerRequest) {
	var ask confirmAsk
	if err := decodeBody(r, &ask); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the confirmation cannot be read")
		return
	}
	s.mu.Lock()
	pe := s.pending[ask.Token]
	ok := pe != nil && pe.cert == r.Cert && ask.Serial == r.Serial
	if ok {
		pe.confirmed = r.Serial
	}
	s.mu.Unlock()
	if !ok {
		api.WriteError(w, http.StatusConflict, "no relationship is being established with that appliance over this path")
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"serial": s.Serial})
}
