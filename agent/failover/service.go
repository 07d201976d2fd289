// Package failover pairs two appliances as primary and backup. The
// primary serves; the backup holds its application, pulls the primary's
// configuration and application data on a schedule and on demand, and
// becomes primary when an operator says so or, with automatic failover,
// when the primary stops answering while a witness still does. The shared
// addresses move with the primary role (through the Floating the agent
// hands in: package floatip's probe and announcements).
//
// The pair talks over TLS on the API's port (peer.go) and exchanges
// heartbeats over UDP (heartbeat.go, loop.go); monitor.go decides. A role
// change is made in one place, setRole, and kept in one file, the state
// (state.go), which the boot resumes from. A split brain (both primary)
// is settled by the epoch raised at every takeover, then the serial; the
// loser keeps what it had that differs from the winner as a snapshot.
package failover

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"keel.dev/keel/agent/install"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/supervisor"
)

// Versions is what a box runs; both boxes of a pair must run the same.
type Versions struct {
	Base string `json:"base"`
	App  string `json:"app,omitempty"` // "name version", "" for none
}

func (v Versions) String() string {
	if v.App == "" {
		return "base " + v.Base + " and no application"
	}
	return "base " + v.Base + " and " + v.App
}

// Floating moves the shared addresses (package floatip, and the network
// configuration that records which are held).
type Floating interface {
	// Link is this box's link for p: hint when it has a link of that
	// name, else the one whose network holds p.
	Link(hint string, p netip.Prefix) (string, error)
	// Probe says whether another host answers for p on link: its MAC, or
	// nil.
	Probe(link string, p netip.Prefix) (net.HardwareAddr, error)
	// Take adds p and announces it; unless force, it probes first.
	Take(link string, p netip.Prefix, force bool) error
	Release(link string, p netip.Prefix) error
	Announce(link string, p netip.Prefix) error
}

// App is the application runtime: a backup holds the application.
type App interface {
	Hold(reason string) error
	Release() error
	// DataDir is the application's data folder, mounted; "" when no
	// application is installed.
	DataDir() (string, error)
}

// Section is a configuration file the backup takes from the primary.
type Section struct {
	Name   string
	Path   string
	Reload func() error // makes the box use the new file; nil: read at every use
}

// Network carries the network settings that are the pair's, not the
// box's own (DNS and NTP servers): the primary's are applied on the
// backup.
type Network interface {
	Synced() (json.RawMessage, error)
	ApplySynced(json.RawMessage) error
}

// Service is the failover subsystem of one box. Fill in the fields, then
// Open it at boot and run Run.
type Service struct {
	Dir      string // where its state lives, e.g. /data/keel/failover
	Serial   string
	Cert     tls.Certificate
	Key      func() string // the inter-appliance key; "" when none is set
	Versions func() Versions
	Now      func() time.Time // nil: time.Now
	Floating Floating
	App      App // nil: no application runtime
	Sections []Section
	Network  Network // nil: nothing of the network is synced
	Jobs     *install.Jobs
	// NS is where the heartbeat and witness sockets are opened (tests
	// use their own namespace); the zero NS is the box's.
	NS   netcfg.NS
	Dial func(ctx context.Context, network, addr string) (net.Conn, error) // nil: net.Dialer
	// Gateway finds the default gateway, the witness when none is set.
	Gateway func() (netip.Addr, error)
	Log     *slog.Logger
	// BootGrace is how long a backup waits after its start for a primary
	// that never answered before it takes over; 0: 10 s.
	BootGrace time.Duration
	// HeartbeatPort overrides HeartbeatPort, and HeartbeatAddr listens
	// on one address instead of all (tests run two boxes on loopback).
	HeartbeatPort int
	HeartbeatAddr netip.Addr
	// Echo asks the witness; nil: an ICMP echo request.
	Echo func(ctx context.Context, addr netip.Addr, window time.Duration) error

	mu       sync.Mutex
	st       State
	opened   bool
	peerSeen peerSeen
	held     string            // why automatic takeover waits, from the monitor
	addrErrs map[string]string // shared address → why it is not held
	pending  map[string]*pendingEstablish
	syncing  bool
	nextSync time.Time
	// crashAfterCommit stops a sync between its commit and its apply,
	// as a power cut would (tests).
	crashAfterCommit bool
	// lastAppDir is the application's data folder as the last sync found it.
	lastAppDir string

	roleMu   sync.Mutex    // one role change at a time
	saveMu   sync.Mutex    // one save of the state at a time, in order
	syncMu   sync.Mutex    // one sync at a time
	restartc chan struct{} // the relationship or its settings changed
	rolec    chan struct{} // the role changed
	syncc    chan struct{} // sync now
	hashes   hashCache
}

// peerSeen is what the heartbeats say of the peer.
type peerSeen struct {
	at    time.Time
	role  Role
	epoch uint64
	auto  bool
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Service) hbPort() int {
	if s.HeartbeatPort != 0 {
		return s.HeartbeatPort
	}
	return HeartbeatPort
}

// State is the relationship as it stands.
func (s *Service) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Role is the box's role now.
func (s *Service) Role() Role { return s.State().Role }

// Open reads the state at boot, finishes a sync a power cut interrupted,
// and holds the application on a backup: call it before the application
// starts.
func (s *Service) Open() error {
	s.mu.Lock()
	if s.restartc == nil {
		s.restartc, s.rolec, s.syncc = make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{}, 1)
		s.pending = map[string]*pendingEstablish{}
		s.addrErrs = map[string]string{}
	}
	s.mu.Unlock()
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	st, err := LoadState(s.Dir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.st, s.opened = st, true
	s.mu.Unlock()
	if err := s.resumeJournal(); err != nil {
		s.log().Error("a sync interrupted by a restart could not be finished; the next sync repairs it", "err", err)
	}
	if st.Role == RoleBackup && s.App != nil {
		if err := s.App.Hold(holdReason(st)); err != nil {
			return fmt.Errorf("hold the application on the backup: %w", err)
		}
	}
	return nil
}

func holdReason(st State) string {
	serial := "the primary"
	if st.Peer != nil {
		serial = st.Peer.Serial
	}
	return "this appliance is the backup of " + serial + "; the application runs on the primary"
}

// SharedAddresses are the relationship's shared addresses (the agent's
// boot leaves them to this service).
func (s *Service) SharedAddresses() []SharedAddress {
	st := s.State()
	if !st.In() {
		return nil
	}
	return slices.Clone(st.Shared)
}

// Run resumes the relationship from the state (a primary takes its
// shared addresses, a backup makes sure it holds none) and runs the
// heartbeats and the backup's sync schedule until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if !s.opened {
		return errors.New("failover: Open was not called")
	}
	switch st := s.State(); st.Role {
	case RolePrimary:
		s.takeAddresses(false)
	case RoleBackup:
		s.releaseAddresses()
	}
	for {
		st := s.State()
		runCtx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		if st.In() {
			wg.Add(2)
			go func() { defer wg.Done(); s.heartbeats(runCtx, st) }()
			go func() { defer wg.Done(); s.schedule(runCtx) }()
		}
		select {
		case <-ctx.Done():
		case <-s.restartc:
		}
		cancel()
		wg.Wait()
		if ctx.Err() != nil {
			return nil
		}
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// roleOpts say how a role change is made.
type roleOpts struct {
	// force takes the shared addresses without probing: the old primary
	// said it released them.
	force bool
	// diverged: this box lost a split brain; what it has that differs
	// from the winner is kept as a snapshot at its next sync.
	diverged bool
}

// setRole is the one place a box's role changes: saved first, so a power
// cut resumes the new role; then the shared addresses and the
// application follow. A takeover whose checks are done (force) takes the
// addresses before it saves: clients wait for them, and a power cut in
// between leaves a backup that takes over again.
func (s *Service) setRole(role Role, epoch uint64, why string, o roleOpts) error {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	early := role == RolePrimary && o.force && s.State().Role == RoleBackup
	if early {
		s.takeAddresses(true)
	}
	var prev Role
	err := s.updateIf(func(st *State) error {
		if !st.In() {
			return errors.New("this appliance is not in a failover relationship")
		}
		prev = st.Role
		st.Role, st.Epoch = role, max(epoch, st.Epoch)
		if prev != role {
			st.RoleSince, st.LastChange = s.now().UTC(), why
		}
		if o.diverged {
			st.Diverged = "split-brain-" + s.now().UTC().Format("20060102T150405Z")
		}
		return nil
	})
	if err != nil {
		if early {
			s.releaseAddresses()
		}
		return fmt.Errorf("the role change was not made: %w", err)
	}
	st := s.State()
	signal(s.rolec)
	s.log().Warn("failover role", "role", role, "epoch", st.Epoch, "why", why)
	switch role {
	case RolePrimary:
		if !early {
			s.takeAddresses(o.force)
		}
		if s.App != nil && prev != RolePrimary {
			supervisor.Go(s.log(), "start the application on the new primary", func() {
				if err := s.App.Release(); err != nil {
					s.log().Error("the application did not start on the new primary", "err", err)
				}
			})
		}
	case RoleBackup:
		s.releaseAddresses()
		if o.diverged {
			if err := s.snapshotConfig(st.Diverged); err != nil {
				s.log().Error("the diverged configuration was not kept", "err", err)
			}
		}
		if s.App != nil {
			if err := s.App.Hold(holdReason(st)); err != nil {
				s.log().Error("the application was not held on the backup", "err", err)
			}
		}
		if o.diverged {
			signal(s.syncc)
		}
	}
	return nil
}

// takeAddresses takes the shared addresses, and says in the status which
// it could not.
func (s *Service) takeAddresses(force bool) {
	for _, a := range s.State().Shared {
		err := s.forShared(a, func(link string, p netip.Prefix) error { return s.Floating.Take(link, p, force) })
		s.noteAddr(a, err)
		if err != nil {
			s.log().Error("shared address not taken", "address", a.Address, "err", err)
		}
	}
}

func (s *Service) releaseAddresses() {
	for _, a := range s.State().Shared {
		err := s.forShared(a, s.Floating.Release)
		s.noteAddr(a, err)
		if err != nil {
			s.log().Error("shared address not released", "address", a.Address, "err", err)
		}
	}
}

func (s *Service) announce() {
	for _, a := range s.State().Shared {
		if err := s.forShared(a, s.Floating.Announce); err != nil {
			s.log().Warn("shared address not announced", "address", a.Address, "err", err)
		}
	}
}

func (s *Service) forShared(a SharedAddress, f func(string, netip.Prefix) error) error {
	if s.Floating == nil {
		return errors.New("no floating-address service")
	}
	p, err := a.Prefix()
	if err != nil {
		return err
	}
	link, err := s.Floating.Link(a.Interface, p)
	if err != nil {
		return err
	}
	return f(link, p)
}

func (s *Service) noteAddr(a SharedAddress, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.addrErrs[a.Address] = err.Error()
	} else {
		delete(s.addrErrs, a.Address)
	}
}

// update changes and saves the state: f changes a copy (an error keeps
// it from being saved), which is written, then published. Readers of the
// state (the heartbeat loop, the status) never wait for the disk: saves
// are ordered by their own lock.
func (s *Service) update(f func(*State)) error {
	return s.updateIf(func(st *State) error { f(st); return nil })
}

// updateIf is update with a change that may refuse.
func (s *Service) updateIf(f func(*State) error) error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	st := s.State()
	if err := f(&st); err != nil {
		return err
	}
	if err := saveState(s.Dir, st); err != nil {
		return err
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	return nil
}

// adoptEpoch keeps a higher epoch the primary's heartbeats showed, so a
// takeover after a restart still outranks it.
func (s *Service) adoptEpoch(e uint64) {
	if s.State().Epoch >= e {
		return
	}
	if err := s.update(func(st *State) { st.Epoch = max(st.Epoch, e) }); err != nil {
		s.log().Warn("the primary's epoch was not saved", "err", err)
	}
}

func (s *Service) snapshotDir(name string) string { return filepath.Join(s.Dir, "snapshots", name) }
