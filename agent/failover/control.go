package failover

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"keel.dev/keel/agent/api"
)

// BecomePrimaryRequest is POST /api/v1/failover/become-primary.
type BecomePrimaryRequest struct {
	// FinalSync pulls a last sync from the primary first; if it fails,
	// nothing changes.
	FinalSync bool `json:"final_sync"`
	// Force takes the shared addresses even though another host still
	// answers for them and the primary cannot be told to let go.
	Force bool `json:"force"`
}

type demoteAsk struct {
	Epoch  uint64 `json:"epoch"`
	Reason string `json:"reason"`
}

type demoteAnswer struct {
	Released bool `json:"released"`
}

// BecomePrimary makes this backup the primary: the old primary becomes
// backup now if it answers (it lets the shared addresses go first), or
// when it comes back (the higher epoch wins).
func (s *Service) BecomePrimary(ctx context.Context, req BecomePrimaryRequest) (State, string, error) {
	st := s.State()
	if st.Role != RoleBackup {
		return st, "", &refusal{http.StatusConflict, fmt.Sprintf("this appliance is %s: only a backup becomes primary", describeRole(st))}
	}
	if req.FinalSync {
		if _, err := s.pull(ctx, nil); err != nil {
			return st, "", &refusal{http.StatusBadGateway, "the final sync failed, so nothing changed (" + err.Error() + "); try again, or become primary without the final sync"}
		}
		st = s.State()
	}
	s.mu.Lock()
	seen := s.peerSeen
	s.mu.Unlock()
	epoch := max(st.Epoch, seen.epoch) + 1
	why := "the operator made this appliance primary"
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	a, err := s.call(dctx, peerCall{Addr: s.peerAddr(st), Pin: st.Peer.CertSHA256, Method: "POST", Path: peerPrefix + "demote",
		Body: demoteAsk{Epoch: epoch, Reason: s.Serial + " was made primary by its operator"}})
	released := false
	if err == nil {
		var ans demoteAnswer
		err = a.decode(&ans)
		released = err == nil && ans.Released
	}
	cancel()
	note := st.Peer.Serial + " became backup and let the shared addresses go"
	if !released {
		note = fmt.Sprintf("%s did not answer (%v): it becomes backup when it comes back, since this appliance's epoch %d is higher", st.Peer.Serial, err, epoch)
		if !req.Force {
			for _, sh := range st.Shared {
				var owner string
				s.forShared(sh, func(link string, p netip.Prefix) error {
					mac, err := s.Floating.Probe(link, p)
					if mac != nil {
						owner = mac.String()
					}
					return err
				})
				if owner != "" {
					return st, "", &refusal{http.StatusConflict, fmt.Sprintf("%s does not answer on its TLS port, but the shared address %s still answers from %s: it may still be serving; stop it, or force the takeover", st.Peer.Serial, sh.Address, owner)}
				}
			}
		}
	}
	if err := s.setRole(RolePrimary, epoch, why, roleOpts{force: true}); err != nil {
		return st, "", err
	}
	return s.State(), "this appliance is primary now (epoch " + fmt.Sprint(epoch) + "); " + note, nil
}

// peerDemote is the primary's side of BecomePrimary.
func (s *Service) peerDemote(w http.ResponseWriter, r *peerRequest) {
	var ask demoteAsk
	if err := decodeBody(r, &ask); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the request cannot be read")
		return
	}
	st := s.State()
	if ask.Epoch <= st.Epoch && st.Role == RolePrimary {
		api.WriteError(w, http.StatusConflict, fmt.Sprintf("%s's epoch %d is not above this primary's %d", r.Serial, ask.Epoch, st.Epoch))
		return
	}
	if st.Role == RolePrimary {
		if err := s.setRole(RoleBackup, ask.Epoch, ask.Reason, roleOpts{}); err != nil {
			api.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
	}
	api.WriteJSON(w, http.StatusOK, demoteAnswer{Released: true})
}

// Break ends the relationship on this box and, if it answers, on the
// peer: both keep every setting; the primary keeps the shared addresses,
// the backup runs its application again.
func (s *Service) Break(ctx context.Context) (string, error) {
	st := s.State()
	if !st.In() {
		return "", &refusal{http.StatusConflict, "this appliance is not in a failover relationship"}
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	a, err := s.call(bctx, peerCall{Addr: s.peerAddr(st), Pin: st.Peer.CertSHA256, Method: "POST", Path: peerPrefix + "break", Body: struct{}{}})
	if err == nil {
		err = a.decode(nil)
	}
	cancel()
	if err := s.breakLocal("the operator broke the relationship"); err != nil {
		return "", err
	}
	if err != nil {
		return fmt.Sprintf("the relationship with %s is broken here; %s did not answer (%v): break it there too", st.Peer.Serial, st.Peer.Serial, err), nil
	}
	return fmt.Sprintf("the relationship with %s is broken on both appliances; every other setting stays", st.Peer.Serial), nil
}

func (s *Service) peerBreak(w http.ResponseWriter, r *peerRequest) {
	if err := s.breakLocal(r.Serial + " broke the relationship"); err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"serial": s.Serial})
}

func (s *Service) breakLocal(why string) error {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	st := s.State()
	if !st.In() {
		return nil
	}
	err := s.update(func(cur *State) {
		if !cur.In() {
			return
		}
		cur.LastChange = why + " (was " + describeRole(*cur) + ")"
		cur.Role, cur.Peer, cur.Reverse, cur.Diverged = RoleNone, nil, nil, ""
		cur.RoleSince = s.now().UTC()
	})
	if err != nil {
		return fmt.Errorf("the relationship could not be broken: %w", err)
	}
	s.log().Warn("failover relationship broken", "why", why)
	if st.Role == RoleBackup && s.App != nil {
		if err := s.App.Release(); err != nil {
			s.log().Error("the application did not start after the relationship ended", "err", err)
		}
	}
	signal(s.restartc)
	return nil
}

// SetSettings changes the relationship's settings on the primary and
// hands them to the backup (which otherwise takes them at its next
// sync). Outside a relationship they are kept for the next one.
func (s *Service) SetSettings(ctx context.Context, set Settings) (string, error) {
	if err := set.Check(); err != nil {
		return "", err
	}
	st := s.State()
	if st.Role == RoleBackup {
		return "", &refusal{http.StatusConflict, "this appliance is the backup of " + st.Peer.Serial + ": change the settings on the primary"}
	}
	if err := s.update(func(cur *State) { cur.Settings = set }); err != nil {
		return "", err
	}
	signal(s.restartc)
	if !st.In() {
		return "saved; they apply to the next relationship", nil
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	a, err := s.call(pctx, peerCall{Addr: s.peerAddr(st), Pin: st.Peer.CertSHA256, Method: "POST", Path: peerPrefix + "settings", Body: set})
	if err == nil {
		err = a.decode(nil)
	}
	if err != nil {
		return fmt.Sprintf("saved here; %s did not take them now (%v) and takes them at its next sync", st.Peer.Serial, err), nil
	}
	return "saved on both appliances", nil
}

func (s *Service) peerSettings(w http.ResponseWriter, r *peerRequest) {
	var set Settings
	if err := decodeBody(r, &set); err != nil || set.Check() != nil {
		api.WriteError(w, http.StatusBadRequest, "the settings cannot be used")
		return
	}
	if st := s.State(); st.Role != RoleBackup {
		api.WriteError(w, http.StatusConflict, s.Serial+" is not the backup")
		return
	}
	if err := s.update(func(cur *State) { cur.Settings = set }); err != nil {
		api.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	signal(s.restartc)
	api.WriteJSON(w, http.StatusOK, map[string]string{"serial": s.Serial})
}

// peerStateAnswer is GET /failover/v1/state.
type peerStateAnswer struct {
	Serial   string   `json:"serial"`
	Role     Role     `json:"role"`
	Epoch    uint64   `json:"epoch"`
	Versions Versions `json:"versions"`
}

func (s *Service) peerState(w http.ResponseWriter, r *peerRequest) {
	st := s.State()
	api.WriteJSON(w, http.StatusOK, peerStateAnswer{Serial: s.Serial, Role: st.Role, Epoch: st.Epoch, Versions: s.Versions()})
}

// schedule runs the backup's syncs: the first FirstSyncDelay after the
// relationship was made, then every SyncInterval, and at once on Sync
// Now or after this box lost a split brain.
func (s *Service) schedule(ctx context.Context) {
	s.mu.Lock()
	if s.nextSync.IsZero() {
		st := s.st
		next := st.Since.Add(FirstSyncDelay)
		if st.LastSync != nil {
			next = st.LastSync.At.Add(st.Settings.SyncInterval.D())
		}
		if st.Diverged != "" {
			next = s.now()
		}
		s.nextSync = next
	}
	s.mu.Unlock()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.syncc:
			s.mu.Lock()
			s.nextSync = s.now()
			s.mu.Unlock()
		}
		st := s.State()
		s.mu.Lock()
		due := !s.now().Before(s.nextSync)
		s.mu.Unlock()
		if st.Role != RoleBackup || !due {
			continue
		}
		s.pullScheduled(ctx)
	}
}
