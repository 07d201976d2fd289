package netcfg

import (
	"net"
	"sync/atomic"

	"github.com/vishvananda/netlink"
)

// Netlink is the part of the kernel's netlink interface this package uses.
// *netlink.Handle satisfies it; the reconciler and the DHCP client count
// every call that changes state, so tests can prove that a reapply is a
// no-op.
type Netlink interface {
	LinkList() ([]netlink.Link, error)
	LinkByName(name string) (netlink.Link, error)
	LinkSetUp(link netlink.Link) error
	LinkSetDown(link netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	RouteListFiltered(family int, filter *netlink.Route, filterMask uint64) ([]netlink.Route, error)
	RouteAdd(route *netlink.Route) error
	RouteReplace(route *netlink.Route) error
	RouteDel(route *netlink.Route) error
}

// counting passes calls through to a Netlink and counts those that change
// state (adds, deletes, link settings), not reads.
type counting struct {
	Netlink
	n *atomic.Uint64
}

func (c counting) LinkSetUp(l netlink.Link) error   { c.n.Add(1); return c.Netlink.LinkSetUp(l) }
func (c counting) LinkSetDown(l netlink.Link) error { c.n.Add(1); return c.Netlink.LinkSetDown(l) }
func (c counting) LinkSetMTU(l netlink.Link, mtu int) error {
	c.n.Add(1)
	return c.Netlink.LinkSetMTU(l, mtu)
}
func (c counting) AddrAdd(l netlink.Link, a *netlink.Addr) error {
	c.n.Add(1)
	return c.Netlink.AddrAdd(l, a)
}
func (c counting) AddrReplace(l netlink.Link, a *netlink.Addr) error {
	c.n.Add(1)
	return c.Netlink.AddrReplace(l, a)
}
func (c counting) AddrDel(l netlink.Link, a *netlink.Addr) error {
	c.n.Add(1)
	return c.Netlink.AddrDel(l, a)
}
func (c counting) RouteAdd(r *netlink.Route) error     { c.n.Add(1); return c.Netlink.RouteAdd(r) }
func (c counting) RouteReplace(r *netlink.Route) error { c.n.Add(1); return c.Netlink.RouteReplace(r) }
func (c counting) RouteDel(r *netlink.Route) error     { c.n.Add(1); return c.Netlink.RouteDel(r) }

// findLink returns the link a configured interface matches: by MAC when
// one is given, else by name.
func findLink(links []netlink.Link, ifc Interface) netlink.Link {
	var mac net.HardwareAddr
	if ifc.MAC != "" {
		mac, _ = net.ParseMAC(ifc.MAC)
	}
	for _, l := range links {
		a := l.Attrs()
		if mac != nil {
			if a.HardwareAddr.String() == mac.String() {
				return l
			}
			continue
		}
		if a.Name == ifc.Name {
			return l
		}
	}
	return nil
}
