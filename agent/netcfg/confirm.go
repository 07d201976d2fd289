package netcfg

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/vishvananda/netlink"
)

// DefaultConfirmTimeout is how long a change that could cut off the
// client that made it stays without confirmation before it is rolled back.
const DefaultConfirmTimeout = 60 * time.Second

// Errors from Confirm.
var (
	ErrNothingPending = errors.New("no network change awaits confirmation")
	ErrWrongToken     = errors.New("the token does not match the network change awaiting confirmation")
)

// pending is a change applied on a client's request that the client has
// not yet confirmed it can still reach the box after.
type pending struct {
	token    string
	deadline time.Time
	prev     Config // the last confirmed configuration, restored on rollback
	timer    *time.Timer
	// after, when set, is told how the wait ended: confirmed (or
	// superseded by a deliberate change) or rolled back.
	after func(confirmed bool)
}

// AwaitConfirmation makes the configuration in force (one a restore put
// in place before the boot) wait for confirmation like a client's
// change: unless Confirm(token) comes within timeout, prev is applied and
// saved. after, when not nil, is told how it ended.
func (m *Manager) AwaitConfirmation(prev Config, token string, timeout time.Duration, after func(confirmed bool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending != nil {
		m.pending.timer.Stop()
	}
	p := &pending{token: token, deadline: time.Now().Add(timeout), prev: prev, after: after}
	p.timer = time.AfterFunc(timeout, func() { m.rollback(token) })
	m.pending = p
}

func (p *pending) ended(confirmed bool) {
	if p.after != nil {
		go p.after(confirmed)
	}
}

// PendingStatus is what Status shows of a change awaiting confirmation;
// the token is only ever given to the client that made the change.
type PendingStatus struct {
	RollbackAt time.Time `json:"rollback_at"`
}

// Pending is what ApplyFrom returns for a change that must be confirmed.
type Pending struct {
	Token      string    `json:"confirm_token"`
	RollbackAt time.Time `json:"rollback_at"`
}

// ApplyFrom is Apply for a change a client asked for over a connection
// that arrived on the box's address local. When the change could cut
// that client off (see NeedsConfirm), it is applied but neither saved nor
// kept: unless Confirm is called with the returned token within the
// confirmation timeout, the last confirmed configuration is applied again.
// An invalid local (the address is unknown) applies like Apply.
//
// announce, when not nil, is called with such a change's token before
// anything is applied: a client whose own address goes away can receive
// nothing afterwards, yet needs the token to confirm from the address it
// reaches the box on next.
//
// A change made while another awaits confirmation replaces it; the
// rollback still goes back to the last confirmed configuration.
func (m *Manager) ApplyFrom(c Config, local netip.Addr, announce func(*Pending)) (Result, *Pending, error) {
	return m.applyFrom(c, local, false, announce)
}

// ApplyGuarded applies c to be confirmed whatever it changes: the
// console's changes, whose operator may be at the box or may be on a
// terminal server reached through the very network being changed.
func (m *Manager) ApplyGuarded(c Config, announce func(*Pending)) (Result, *Pending, error) {
	return m.applyFrom(c, netip.Addr{}, true, announce)
}

func (m *Manager) applyFrom(c Config, local netip.Addr, always bool, announce func(*Pending)) (Result, *Pending, error) {
	if err := c.Validate(); err != nil {
		return Result{}, nil, err
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	old := m.cfg
	if m.pending != nil {
		old = m.pending.prev
	}
	m.mu.Unlock()
	guard, err := m.NeedsConfirm(old, c, local)
	if always {
		guard, err = true, nil
	}
	if err != nil {
		// Not knowing which link the client uses is a reason for more
		// care, not less.
		m.log.Warn("cannot tell whether the change reaches the client's link; asking for confirmation", "err", err)
		guard = true
	}
	if !guard {
		m.settle()
		res, err := m.apply(c, true, false)
		return res, nil, err
	}
	token, err := newToken()
	if err != nil {
		return Result{}, nil, err
	}
	timeout := m.opts.ConfirmTimeout
	if timeout <= 0 {
		timeout = DefaultConfirmTimeout
	}
	m.mu.Lock()
	var after func(bool)
	if m.pending != nil {
		m.pending.timer.Stop()
		after = m.pending.after // the new change carries the wait on
	}
	p := &pending{token: token, deadline: time.Now().Add(timeout), prev: old, after: after}
	// The timer starts before the change is applied: a client cut off
	// half-way through a slow apply gets no more time than one cut off
	// at the end.
	p.timer = time.AfterFunc(timeout, func() { m.rollback(token) })
	m.pending = p
	m.mu.Unlock()
	m.log.Info("network change awaits confirmation", "local", local, "rollback_at", p.deadline)
	pub := &Pending{Token: token, RollbackAt: p.deadline}
	if announce != nil {
		announce(pub)
	}
	res, err := m.apply(c, false, false)
	return res, pub, err
}

// Confirm keeps the change awaiting confirmation and saves it.
func (m *Manager) Confirm(token string) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	p := m.pending
	if p == nil {
		rolled := m.rolled
		m.mu.Unlock()
		if !rolled.IsZero() {
			return fmt.Errorf("%w (the last one was rolled back at %s)", ErrNothingPending, rolled.Format(time.RFC3339))
		}
		return ErrNothingPending
	}
	if token != p.token {
		m.mu.Unlock()
		return ErrWrongToken
	}
	p.timer.Stop()
	m.pending = nil
	cfg := m.cfg
	m.mu.Unlock()
	p.ended(true)
	m.log.Info("network change confirmed")
	return m.save(cfg)
}

// settle drops a change awaiting confirmation because a deliberate apply
// supersedes it. The caller holds applyMu.
func (m *Manager) settle() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending != nil {
		m.pending.timer.Stop()
		m.pending.ended(true)
		m.pending = nil
	}
}

// rollback re-applies the last confirmed configuration if the change
// identified by token is still unconfirmed.
func (m *Manager) rollback(token string) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	p := m.pending
	if p == nil || p.token != token || m.closed {
		m.mu.Unlock()
		return
	}
	m.pending = nil
	m.rolled = time.Now()
	m.mu.Unlock()
	p.ended(false)
	m.log.Warn("network change not confirmed in time; restoring the previous configuration")
	// Saved too, although the file should hold it already: it may have
	// been written by hand meanwhile, and the box must come back the
	// way it can be reached.
	if _, err := m.apply(p.prev, true, false); err != nil {
		m.log.Error("previous network configuration not fully restored", "err", err)
	}
}

// NeedsConfirm reports whether changing from old to c could cut off a
// client whose connection arrived on the box's address local: the change
// touches the link that holds local (its entry: addresses, enabled state,
// MTU) or the routing (gateways or routes, which a client beyond a router
// depends on). Loopback and an unknown local need none. DNS, host name
// and NTP changes never need one.
func (m *Manager) NeedsConfirm(old, c Config, local netip.Addr) (bool, error) {
	local = local.Unmap()
	if !local.IsValid() || local.IsLoopback() {
		return false, nil
	}
	if !reflect.DeepEqual(old.Gateways, c.Gateways) || !reflect.DeepEqual(old.Routes, c.Routes) {
		return true, nil
	}
	links, err := m.rec.nl.LinkList()
	if err != nil {
		return false, fmt.Errorf("list links: %w", err)
	}
	var link netlink.Link
	for _, l := range links {
		addrs, err := m.rec.nl.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return false, fmt.Errorf("list addresses on %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			if p, ok := prefixOf(a.IPNet); ok && p.Addr() == local {
				link = l
			}
		}
	}
	if link == nil {
		return false, fmt.Errorf("no link holds %s", local)
	}
	entry := func(c Config) *Interface {
		for i, ifc := range c.Interfaces {
			if l := findLink(links, ifc); l != nil && l.Attrs().Index == link.Attrs().Index {
				return &c.Interfaces[i]
			}
		}
		return nil
	}
	return !reflect.DeepEqual(entry(old), entry(c)), nil
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make confirmation token: %w", err)
	}
	return hex.EncodeToString(b), nil
}
