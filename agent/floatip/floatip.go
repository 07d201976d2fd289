// Package floatip moves shared (floating) addresses between appliances:
// enabling one first checks that no other host answers for it (an ARP
// probe, RFC 5227; duplicate address detection, RFC 4862, for IPv6), then
// adds it and announces it (gratuitous ARP, or an
// unsolicited neighbour advertisement for IPv6) so switches and neighbours
// send traffic to this box at once; disabling removes it.
package floatip

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/netcfg"
)

// ConflictError says another host answers for the address.
type ConflictError struct {
	Addr  netip.Addr
	Owner net.HardwareAddr
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s is in use by the host with MAC %s; disable it there first or force the takeover", e.Addr, e.Owner)
}

// ErrNotFloating refuses to touch an address the network configuration
// put on the link: the floating-address endpoints change only the
// addresses they added.
var ErrNotFloating = errors.New("not a floating address")

// Manager enables and disables floating addresses in one namespace.
type Manager struct {
	ns  netcfg.NS
	nl  *netlink.Handle
	log *slog.Logger

	// Probes ARP probes are sent Interval apart, then Wait is given for an
	// answer. RFC 5227 asks for 3 probes 1-2 s apart; a failover must be
	// quicker, and on the LAN segments appliances share an answer comes
	// in well under a millisecond.
	Probes   int
	Interval time.Duration
	Wait     time.Duration
	// Announcements are sent AnnounceInterval apart; the first at once.
	Announcements    int
	AnnounceInterval time.Duration

	// ConfirmTimeout is how long a disable that removed the client's own
	// address waits for its confirmation before it is undone; 0 means
	// netcfg.DefaultConfirmTimeout.
	ConfirmTimeout time.Duration

	unconfirmed pendingDisables

	mu        sync.Mutex
	held      map[string]netip.Prefix // "link addr" → prefix, for Holds
	conflicts map[string]string       // "link addr" → why it is not held after a restore
}

// New opens a manager for namespace ns (the zero NS is the agent's own).
func New(ns netcfg.NS, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h, err := ns.Netlink()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	return &Manager{ns: ns, nl: h, log: log,
		Probes: 3, Interval: 100 * time.Millisecond, Wait: 200 * time.Millisecond,
		Announcements: 2, AnnounceInterval: 200 * time.Millisecond,
		held: map[string]netip.Prefix{}, conflicts: map[string]string{}}, nil
}

// Close releases the netlink handle.
func (m *Manager) Close() { m.nl.Close() }

// Enable adds addr (with its prefix length) to link and announces it.
// Unless force, it first probes for another holder (ARP probes for IPv4,
// duplicate address detection probes for IPv6) and refuses with
// a *ConflictError naming its MAC. Enabling an address it holds only
// announces it again; one the network configuration holds is refused
// (ErrNotFloating).
func (m *Manager) Enable(link string, addr netip.Prefix, force bool) error {
	l, err := m.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("enable %s: link %s: %w", addr, link, err)
	}
	present, err := m.owned(l, link, addr)
	if err != nil {
		return err
	}
	var ifi *net.Interface
	var ac *arpConn
	var nc *ndpConn
	err = m.ns.Do(func() error {
		var err error
		if ifi, err = net.InterfaceByName(link); err != nil {
			return err
		}
		if addr.Addr().Is4() {
			ac, err = openARP(ifi)
		} else if !present && !force {
			nc, err = openNDP(ifi)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("enable %s on %s: %w", addr, link, err)
	}
	if ac != nil {
		defer ac.Close()
	}
	if ac != nil && !present && !force {
		owner, err := ac.probe(addr.Addr(), m.Probes, m.Interval, m.Wait)
		if err != nil {
			return fmt.Errorf("enable %s on %s: %w", addr, link, err)
		}
		if owner != nil {
			return &ConflictError{Addr: addr.Addr(), Owner: owner}
		}
	}
	if nc != nil {
		owner, err := nc.probe(addr.Addr(), m.Probes, m.Interval, m.Wait)
		nc.Close()
		if err != nil {
			return fmt.Errorf("enable %s on %s: %w", addr, link, err)
		}
		if owner != nil {
			return &ConflictError{Addr: addr.Addr(), Owner: owner}
		}
	}
	if !present {
		a := &netlink.Addr{IPNet: ipNet(addr)}
		if addr.Addr().Is6() {
			// Usable at once: duplicate address detection would hold
			// it back for a second and block the announcement.
			a.Flags = unix.IFA_F_NODAD
		}
		if err := m.nl.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s on %s: %w", addr, link, err)
		}
	}
	m.mu.Lock()
	m.held[link+" "+addr.Addr().String()] = addr
	delete(m.conflicts, link+" "+addr.Addr().String())
	m.mu.Unlock()
	for i := 0; i < max(m.Announcements, 1); i++ {
		if i > 0 {
			time.Sleep(m.AnnounceInterval)
		}
		if ac != nil {
			err = ac.announce(addr.Addr())
		} else {
			err = m.ns.Do(func() error { return advertise(ifi, addr.Addr()) })
		}
		if err != nil {
			return fmt.Errorf("enable %s on %s: added, but %w", addr, link, err)
		}
	}
	m.log.Info("floating address enabled", "link", link, "addr", addr, "forced", force)
	return nil
}

// Disable removes addr from link, if this Manager added it; an address
// the network configuration put there is refused (ErrNotFloating), and
// an absent one is not an error.
func (m *Manager) Disable(link string, addr netip.Prefix) error {
	l, err := m.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("disable %s: link %s: %w", addr, link, err)
	}
	if _, err := m.owned(l, link, addr); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.held, link+" "+addr.Addr().String())
	delete(m.conflicts, link+" "+addr.Addr().String())
	m.mu.Unlock()
	if err := m.nl.AddrDel(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove address %s from %s: %w", addr, link, err)
	}
	m.log.Info("floating address disabled", "link", link, "addr", addr)
	return nil
}

// Restore enables, after a boot, the floating addresses the
// configuration holds: each is probed first and announced, as Enable does.
// One another host answers for is not taken; the conflict is kept for
// Status and returned, with any other failure, joined.
func (m *Manager) Restore(addrs []netcfg.SharedAddress) error {
	var errs []error
	for _, a := range addrs {
		if err := m.Enable(a.Link, a.Prefix, false); err != nil {
			m.mu.Lock()
			m.conflicts[a.Link+" "+a.Prefix.Addr().String()] = err.Error()
			m.mu.Unlock()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Address is one floating address as GET /api/v1/network/floating shows
// it: held, or not held with the reason (a conflict found at boot).
type Address struct {
	Interface string `json:"interface"`
	Address   string `json:"address"`
	Held      bool   `json:"held"`
	Error     string `json:"error,omitempty"`
}

// Status lists the addresses held and those a restore could not take.
func (m *Manager) Status() []Address {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []Address{}
	for k, p := range m.held {
		link, _, _ := strings.Cut(k, " ")
		out = append(out, Address{Interface: link, Address: p.String(), Held: true})
	}
	for k, why := range m.conflicts {
		link, addr, _ := strings.Cut(k, " ")
		out = append(out, Address{Interface: link, Address: addr, Error: why})
	}
	slices.SortFunc(out, func(a, b Address) int { return strings.Compare(a.Interface+" "+a.Address, b.Interface+" "+b.Address) })
	return out
}

// Holds reports whether this manager enabled p on link; it fits
// netcfg.Reconciler.Keep.
func (m *Manager) Holds(link string, p netip.Prefix) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.held[link+" "+p.Addr().String()]
	return ok
}

// owned says whether addr is on l with its prefix length, and refuses
// (ErrNotFloating) an address of l that this Manager did not add: the
// network configuration put it there.
func (m *Manager) owned(l netlink.Link, link string, addr netip.Prefix) (present bool, err error) {
	addrs, err := m.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("list addresses on %s: %w", link, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); !ok || ip.Unmap() != addr.Addr() {
			continue
		}
		if !m.Holds(link, addr) {
			return false, fmt.Errorf("%w: %s on %s is an address of the network configuration, not one added as floating; change it in the network configuration", ErrNotFloating, addr.Addr(), link)
		}
		if ones, _ := a.Mask.Size(); ones == addr.Bits() {
			present = true
		}
	}
	return present, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}
