package floatip

import (
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
