package floatip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
)

// What a failover pair asks of the floating addresses: a quick probe
// before a takeover (run while the detection time runs out, so it adds
// nothing to the takeover), an announcement on its own, and the link an
// address belongs on when the two boxes name their links differently.

// Probe sends probes (two ARP probes 100 ms apart, or two duplicate
// address probes for IPv6) for addr on link and listens 150 ms after the
// last: the MAC of another host that answers for it, or nil. An address
// this box holds itself is nobody else's.
func (m *Manager) Probe(link string, addr netip.Prefix) (net.HardwareAddr, error) {
	var owner net.HardwareAddr
	err := m.onLink(link, func(ifi *net.Interface) error {
		if addr.Addr().Is4() {
			ac, err := openARP(ifi)
			if err != nil {
				return err
			}
			defer ac.Close()
			owner, err = ac.probe(addr.Addr(), 2, 100*time.Millisecond, 150*time.Millisecond)
			return err
		}
		nc, err := openNDP(ifi)
		if err != nil {
			return err
		}
		defer nc.Close()
		owner, err = nc.probe(addr.Addr(), 2, 100*time.Millisecond, 150*time.Millisecond)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("probe for %s on %s: %w", addr.Addr(), link, err)
	}
	return owner, nil
}

// Announce announces an address this box holds again (gratuitous ARP,
// or an unsolicited neighbour advertisement), once.
func (m *Manager) Announce(link string, addr netip.Prefix) error {
	if !m.Holds(link, addr) {
		return fmt.Errorf("announce %s on %s: this appliance does not hold it", addr, link)
	}
	return m.onLink(link, func(ifi *net.Interface) error {
		if addr.Addr().Is4() {
			ac, err := openARP(ifi)
			if err != nil {
				return err
			}
			defer ac.Close()
			return ac.announce(addr.Addr())
		}
		return advertise(ifi, addr.Addr())
	})
}

// onLink runs fn in the manager's namespace with link's interface.
func (m *Manager) onLink(link string, fn func(*net.Interface) error) error {
	return m.ns.Do(func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		return fn(ifi)
	})
}

// LinkFor is the link addr belongs on: hint when this box has a link of
// that name, else the link with an address of its own in addr's network.
func (m *Manager) LinkFor(hint string, addr netip.Prefix) (string, error) {
	if hint != "" {
		if _, err := m.nl.LinkByName(hint); err == nil {
			return hint, nil
		}
	}
	links, err := m.nl.LinkList()
	if err != nil {
		return "", err
	}
	for _, l := range links {
		addrs, err := m.nl.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ones, _ := a.Mask.Size()
			if netip.PrefixFrom(ip.Unmap(), ones).Masked().Contains(addr.Addr()) && ip.Unmap() != addr.Addr() {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", fmt.Errorf("no link of this appliance is named %q or has an address in %s's network; give it one", hint, addr.Masked())
}

// Shared is a Manager as a failover pair moves its shared addresses
// (failover.Floating): Persist, when set, records whether the box holds
// an address (netcfg.Manager.SetShared), so a box that leaves the pair
// keeps what it holds across a reboot.
type Shared struct {
	M       *Manager
	Persist func(link string, p netip.Prefix, held bool) error
}

// Link is LinkFor.
func (s Shared) Link(hint string, p netip.Prefix) (string, error) { return s.M.LinkFor(hint, p) }

// Probe is Manager.Probe.
func (s Shared) Probe(link string, p netip.Prefix) (net.HardwareAddr, error) {
	return s.M.Probe(link, p)
}

// Take enables p (probing first unless force) and records it held.
func (s Shared) Take(link string, p netip.Prefix, force bool) error {
	if err := s.M.Enable(link, p, force); err != nil {
		return err
	}
	s.persist(link, p, true)
	return nil
}

// Release disables p and records it not held.
func (s Shared) Release(link string, p netip.Prefix) error {
	if err := s.M.Disable(link, p); err != nil && !errors.Is(err, ErrNotFloating) {
		return err
	}
	s.persist(link, p, false)
	return nil
}

// Announce is Manager.Announce.
func (s Shared) Announce(link string, p netip.Prefix) error { return s.M.Announce(link, p) }

// Holds reports whether this box holds p on the link it belongs on.
func (s Shared) Holds(hint string, p netip.Prefix) bool {
	link, err := s.M.LinkFor(hint, p)
	return err == nil && s.M.Holds(link, p)
}

func (s Shared) persist(link string, p netip.Prefix, held bool) {
	if s.Persist == nil {
		return
	}
	// A pending network change refuses it: the role holds anyway, and
	// the boot takes the addresses by the role, not by this record.
	if err := s.Persist(link, p, held); err != nil {
		s.M.log.Warn("the floating address's state was not recorded in the network configuration", "addr", p, "held", held, "err", err)
	}
}
