package netcfg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/agent/supervisor"
)

// Manager owns the box's network: it keeps the configuration on disk,
// applies it with a Reconciler, runs a DHCP client per interface that asks
// for one, and writes the resolver configuration and host name.
type Manager struct {
	opts ManagerOptions
	rec  *Reconciler
	log  *slog.Logger

	// applyMu serialises applies, confirmations and rollbacks, so a
	// rollback cannot interleave with an operator's next change.
	applyMu sync.Mutex

	mu      sync.Mutex
	cfg     Config
	last    Result
	lastErr error
	leases  map[string]Lease      // by link name
	clients map[string]dhcpClient // by link name
	ctx     context.Context       // set while Run runs
	closed  bool                  // Run has ended; no more rollbacks
	pending *pending              // a change awaiting confirmation
	rolled  time.Time             // when the last rollback happened

	ready     chan struct{} // closed once Run applied the configuration
	readyOnce sync.Once
}

// ManagerOptions configures a Manager; zero values are safe.
type ManagerOptions struct {
	NS         NS     // the zero NS is the agent's own namespace
	Path       string // where the configuration is kept; "" keeps it in memory only
	ResolvConf string // resolv.conf to write; "" skips
	Log        *slog.Logger
	// SetHostname sets the kernel's host name; nil skips it.
	SetHostname func(name string) error
	// OnNTP is told the configured NTP servers after each apply (for the
	// time service); OnLease about each lease change (its NTP servers are
	// the fallback).
	OnNTP   func(servers []string)
	OnLease func(l Lease, ok bool)
	// Keep protects addresses another service holds (floating addresses);
	// see Reconciler.Keep.
	Keep func(link string, p netip.Prefix) bool
	// ConfirmTimeout is how long a change that could cut off its client
	// waits for confirmation before it is rolled back; 0 means
	// DefaultConfirmTimeout. Tests shorten it.
	ConfirmTimeout time.Duration
}

// SystemHostname sets the kernel's host name; use it for
// ManagerOptions.SetHostname in the agent.
func SystemHostname(name string) error {
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("set host name %q: %w", name, err)
	}
	return nil
}

// NewManager loads the configuration at opts.Path if there is one.
func NewManager(opts ManagerOptions) (*Manager, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	rec, err := NewReconciler(opts.NS, opts.Log)
	if err != nil {
		return nil, err
	}
	rec.Keep = opts.Keep
	m := &Manager{opts: opts, rec: rec, log: opts.Log, leases: map[string]Lease{}, clients: map[string]dhcpClient{}, ready: make(chan struct{})}
	if opts.Path != "" {
		b, err := os.ReadFile(opts.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("read network configuration: %w", err)
		default:
			if err := json.Unmarshal(b, &m.cfg); err != nil {
				return nil, fmt.Errorf("read network configuration %s: %w", opts.Path, err)
			}
		}
	}
	return m, nil
}

// Config returns the configuration in force.
func (m *Manager) Config() Config {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cfg
}

// Ready is closed once Run has applied the configuration at boot: links
// are up and addressed, so floating addresses can be probed for.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Reconciler gives access to the change counter, for tests and benchmarks.
func (m *Manager) Reconciler() *Reconciler { return m.rec }

// Run applies the configuration and keeps DHCP clients running until ctx
// ends; then it stops them, which releases their leases.
func (m *Manager) Run(ctx context.Context) error {
	m.applyMu.Lock()
	m.mu.Lock()
	m.ctx = ctx
	cfg := m.cfg
	m.mu.Unlock()
	_, err := m.apply(cfg, false, true)
	m.applyMu.Unlock()
	m.readyOnce.Do(func() { close(m.ready) })
	if err != nil {
		m.log.Warn("network configuration not fully applied", "err", err)
	}
	<-ctx.Done()
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	m.ctx = nil
	m.closed = true
	if m.pending != nil {
		// The file still holds the confirmed configuration, so the
		// next boot applies that one.
		m.pending.timer.Stop()
		m.pending = nil
	}
	var stopped []dhcpClient
	for link, c := range m.clients {
		c.cancel()
		stopped = append(stopped, c)
		delete(m.clients, link)
	}
	m.mu.Unlock()
	m.waitStopped(stopped)
	m.rec.Close()
	return nil
}

// dhcpClient is a running DHCP client: cancel stops it, and done closes
// once it has released its lease and removed its address.
type dhcpClient struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// dhcpStopWait bounds the wait for a stopped client: releasing is one
// datagram and one netlink request.
const dhcpStopWait = 5 * time.Second

// waitStopped waits until the stopped clients are gone, so that an apply
// that drops DHCP from a link returns with its address removed, and a
// shutdown with its lease released. The caller must not hold mu: a client
// that is stopping reports the lost lease through onLease, which takes it.
func (m *Manager) waitStopped(stopped []dhcpClient) {
	timeout := time.After(dhcpStopWait)
	for _, c := range stopped {
		select {
		case <-c.done:
		case <-timeout:
			m.log.Warn("dhcp: a stopped client did not finish releasing its lease", "wait", dhcpStopWait)
			return
		}
	}
}

// Apply validates c, applies it, and keeps it as the configuration in
// force. A configuration that fails validation changes nothing and the
// error is a ValidationError. It is a deliberate change by the agent or
// the console, so it also settles any change awaiting confirmation.
func (m *Manager) Apply(c Config) (Result, error) {
	if err := c.Validate(); err != nil {
		return Result{}, err
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.settle()
	return m.apply(c, true, false)
}

// apply makes c the configuration in force. persist writes it to the file
// (a change awaiting confirmation is not written, so a reboot before the
// confirmation comes back with the confirmed one); boot sets the host name
// even when it has not changed. The caller holds applyMu.
func (m *Manager) apply(c Config, persist, boot bool) (Result, error) {
	res, err := m.rec.Apply(c)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if persist {
		if err := m.save(c); err != nil {
			errs = append(errs, err)
		}
	}
	m.mu.Lock()
	prevHost := m.cfg.Hostname
	m.cfg = c
	m.last = res
	m.lastErr = errors.Join(errs...)
	m.mu.Unlock()
	m.syncDHCP(c)
	if err := m.writeResolver(); err != nil {
		errs = append(errs, err)
	}
	if c.Hostname != "" && m.opts.SetHostname != nil && (c.Hostname != prevHost || boot) {
		if err := m.opts.SetHostname(c.Hostname); err != nil {
			errs = append(errs, err)
		}
	}
	if m.opts.OnNTP != nil {
		m.opts.OnNTP(slices.Clone(c.NTPServers))
	}
	return res, errors.Join(errs...)
}

func (m *Manager) save(c Config) error {
	if m.opts.Path == "" {
		return nil
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := atomicfile.Write(m.opts.Path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save network configuration: %w", err)
	}
	return nil
}

// syncDHCP starts a client on each enabled link that asks for DHCP and
// stops the others (which releases their leases).
func (m *Manager) syncDHCP(c Config) {
	want := map[string]bool{}
	links, err := m.rec.nl.LinkList()
	if err != nil {
		m.log.Warn("dhcp: cannot list links", "err", err)
		return
	}
	for _, ifc := range c.Interfaces {
		if l := findLink(links, ifc); l != nil && ifc.UsesDHCP() {
			want[l.Attrs().Name] = true
		}
	}
	var stopped []dhcpClient
	defer func() { m.waitStopped(stopped) }() // after the unlock below
	m.mu.Lock()
	defer m.mu.Unlock()
	for link, c := range m.clients {
		if !want[link] {
			c.cancel()
			stopped = append(stopped, c)
			delete(m.clients, link)
		}
	}
	if m.ctx == nil {
		return // not running yet; Run starts them
	}
	for link := range want {
		if _, ok := m.clients[link]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(m.ctx)
		c := dhcpClient{cancel: cancel, done: make(chan struct{})}
		m.clients[link] = c
		d := &DHCP{Link: link, NS: m.opts.NS, Log: m.log, OnChange: m.onLease}
		supervisor.Go(m.log, "dhcp client "+link, func() {
			defer close(c.done)
			// A failing link is retried by the next apply; the
			// client itself retries servers that do not answer.
			if err := d.Run(ctx); err != nil {
				m.log.Warn("dhcp client stopped", "link", link, "err", err)
			}
		})
	}
}

func (m *Manager) onLease(l Lease, ok bool) {
	m.mu.Lock()
	if ok {
		m.leases[l.Link] = l
	} else {
		delete(m.leases, l.Link)
	}
	m.mu.Unlock()
	if err := m.writeResolver(); err != nil {
		m.log.Warn("resolv.conf not written", "err", err)
	}
	if m.opts.OnLease != nil {
		m.opts.OnLease(l, ok)
	}
}

// writeResolver writes resolv.conf from the configured DNS servers, or
// when there are none from the leases', only when its content changes.
func (m *Manager) writeResolver() error {
	if m.opts.ResolvConf == "" {
		return nil
	}
	m.mu.Lock()
	var servers []netip.Addr
	for _, s := range m.cfg.DNS.Servers {
		if a, err := netip.ParseAddr(s); err == nil {
			servers = append(servers, a)
		}
	}
	search := slices.Clone(m.cfg.DNS.Search)
	if len(servers) == 0 {
		links := make([]string, 0, len(m.leases))
		for l := range m.leases {
			links = append(links, l)
		}
		slices.Sort(links)
		for _, l := range links {
			lease := m.leases[l]
			servers = append(servers, lease.DNS...)
			if len(search) == 0 {
				search = append(domainList(lease.Domain), lease.Search...)
			}
		}
	}
	m.mu.Unlock()
	b := ResolvConf(servers, search)
	if old, err := os.ReadFile(m.opts.ResolvConf); err == nil && string(old) == string(b) {
		return nil
	}
	if err := atomicfile.Write(m.opts.ResolvConf, b, 0o644); err != nil {
		return fmt.Errorf("write resolver configuration: %w", err)
	}
	return nil
}

// Status is what GET /api/v1/network reports besides the configuration.
type Status struct {
	// Pending is set while a change waits for its client's confirmation.
	Pending *PendingStatus `json:"pending,omitempty"`
	// RolledBackAt is when an unconfirmed change was last rolled back.
	RolledBackAt *time.Time `json:"rolled_back_at,omitempty"`
	Leases       []Lease    `json:"leases"`
	LastApply    Result     `json:"last_apply"`
	LastError    string     `json:"last_error,omitempty"`
	Changes      uint64     `json:"netlink_changes"`
	DHCPLinks    []string   `json:"dhcp_links"`
}

// Status reports leases and the last apply.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Status{LastApply: m.last, Changes: m.rec.Changes(), Leases: []Lease{}, DHCPLinks: []string{}}
	if m.pending != nil {
		st.Pending = &PendingStatus{RollbackAt: m.pending.deadline}
	}
	if !m.rolled.IsZero() {
		t := m.rolled
		st.RolledBackAt = &t
	}
	if m.lastErr != nil {
		st.LastError = m.lastErr.Error()
	}
	for _, l := range m.leases {
		st.Leases = append(st.Leases, l)
	}
	slices.SortFunc(st.Leases, func(a, b Lease) int { return compareStrings(a.Link, b.Link) })
	for l := range m.clients {
		st.DHCPLinks = append(st.DHCPLinks, l)
	}
	slices.Sort(st.DHCPLinks)
	return st
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
