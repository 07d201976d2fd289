package netcfg

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ErrPendingChange refuses a change while another waits for its
// confirmation.
var ErrPendingChange = errors.New("a network change waits for its confirmation")

// SharedAddress is a floating address the configuration holds, on a link
// by its name.
type SharedAddress struct {
	Link   string
	Prefix netip.Prefix
}

// SetShared records in the configuration, and saves, that the floating
// address p on link is held (enabled) or not. The address is kept as a
// shared static address of the link's interface, which the reconciler
// leaves to the floating-address service; so nothing is reconciled. It
// refuses while a change awaits its confirmation (ErrPendingChange), and
// for a link the configuration does not list.
func (m *Manager) SetShared(link string, p netip.Prefix, enabled bool) error {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	m.mu.Lock()
	pending := m.pending != nil
	c := cloneConfig(m.cfg)
	m.mu.Unlock()
	if pending {
		return fmt.Errorf("%w: confirm it (or let it roll back) and set the floating address %s again", ErrPendingChange, p)
	}
	i := m.interfaceOf(c, link)
	if i < 0 {
		if !enabled {
			return nil // never held: nothing to forget
		}
		return fmt.Errorf("interface %s is not in the network configuration; add it there first", link)
	}
	addrs := c.Interfaces[i].Addresses
	j := slices.IndexFunc(addrs, func(a Address) bool {
		q, err := netip.ParsePrefix(a.Address)
		return a.Shared && err == nil && q.Addr() == p.Addr()
	})
	switch {
	case j >= 0:
		addrs[j].Address, addrs[j].Enabled = p.String(), enabled
	case enabled:
		addrs = append(addrs, Address{Method: MethodStatic, Address: p.String(), Enabled: true, Shared: true})
	default:
		return nil
	}
	c.Interfaces[i].Addresses = addrs
	if err := c.Validate(); err != nil {
		return err
	}
	if err := m.save(c); err != nil {
		return err
	}
	m.mu.Lock()
	m.cfg = c
	m.mu.Unlock()
	return nil
}

// SharedAddresses lists the floating addresses the configuration holds
// (shared, enabled, on an enabled interface), by link name.
func (m *Manager) SharedAddresses() ([]SharedAddress, error) {
	c := m.Config()
	var out []SharedAddress
	var errs []error
	for i, ifc := range c.Interfaces {
		if !ifc.Enabled {
			continue
		}
		for _, a := range ifc.Addresses {
			if !a.Shared || !a.Enabled {
				continue
			}
			p, err := netip.ParsePrefix(a.Address)
			if err != nil {
				continue // Validate reports it
			}
			link := m.linkOf(c, i)
			if link == "" {
				errs = append(errs, fmt.Errorf("floating address %s: no link matches interfaces[%d]", p, i))
				continue
			}
			out = append(out, SharedAddress{Link: link, Prefix: p})
		}
	}
	return out, errors.Join(errs...)
}

// interfaceOf finds the configured interface of link: by name, else by
// the link's MAC.
func (m *Manager) interfaceOf(c Config, link string) int {
	if i := slices.IndexFunc(c.Interfaces, func(ifc Interface) bool { return ifc.Name == link }); i >= 0 {
		return i
	}
	l, err := m.rec.nl.LinkByName(link)
	if err != nil {
		return -1
	}
	mac := l.Attrs().HardwareAddr.String()
	return slices.IndexFunc(c.Interfaces, func(ifc Interface) bool { return ifc.MAC != "" && strings.EqualFold(ifc.MAC, mac) })
}

// linkOf is the name of the link interfaces[i] matches.
func (m *Manager) linkOf(c Config, i int) string {
	ifc := c.Interfaces[i]
	if ifc.MAC == "" {
		return ifc.Name
	}
	links, err := m.rec.nl.LinkList()
	if err != nil {
		return ifc.Name
	}
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), ifc.MAC) {
			return l.Attrs().Name
		}
	}
	return ""
}

// cloneConfig copies c's interfaces and their addresses, which SetShared
// changes, so the configuration in force is not changed under a reader.
func cloneConfig(c Config) Config {
	c.Interfaces = slices.Clone(c.Interfaces)
	for i := range c.Interfaces {
		c.Interfaces[i].Addresses = slices.Clone(c.Interfaces[i].Addresses)
	}
	return c
}
