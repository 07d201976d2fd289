package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// wantRoute is a route the configuration asks for, in comparable form.
type wantRoute struct {
	dst    netip.Prefix
	gw     netip.Addr // invalid for a direct route
	link   int        // 0 lets the kernel choose from the gateway
	metric int
}

func (w wantRoute) String() string {
	s := w.dst.String()
	if w.gw.IsValid() {
		s += " via " + w.gw.String()
	}
	if w.metric != 0 {
		s += fmt.Sprintf(" metric %d", w.metric)
	}
	return s
}

func (w wantRoute) matches(r netlink.Route) bool {
	dst, ok := routeDst(r)
	if !ok || dst != w.dst || r.Priority != w.metric {
		return false
	}
	gw, _ := netip.AddrFromSlice(r.Gw)
	if gw.Unmap() != w.gw {
		return false
	}
	return w.link == 0 || r.LinkIndex == w.link
}

// desiredRoutes turns gateways and routes into kernel form; links holds the
// resolved link of each configured interface (nil when missing or down,
// whose routes are then skipped: the kernel would refuse them).
func desiredRoutes(c Config, links []netlink.Link) []wantRoute {
	linkOf := func(ref string) (int, bool) {
		if ref == "" {
			return 0, true
		}
		for i, ifc := range c.Interfaces {
			if ifc.refersTo(ref) {
				if links[i] == nil || !ifc.Enabled {
					return 0, false
				}
				return links[i].Attrs().Index, true
			}
		}
		return 0, false
	}
	var out []wantRoute
	add := func(dst netip.Prefix, via, ref string, metric int) {
		idx, ok := linkOf(ref)
		if !ok {
			return
		}
		w := wantRoute{dst: dst, link: idx, metric: metric}
		if via != "" {
			gw, err := netip.ParseAddr(via)
			if err != nil {
				return
			}
			w.gw = gw
		}
		// The kernel stores IPv6 routes without a metric at 1024;
		// asking for that up front keeps a reapply a no-op.
		if dst.Addr().Is6() && w.metric == 0 {
			w.metric = 1024
		}
		out = append(out, w)
	}
	for _, g := range c.Gateways {
		gw, err := netip.ParseAddr(g.Via)
		if err != nil {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if gw.Is6() {
			dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		add(dst, g.Via, g.Interface, g.Metric)
	}
	for _, r := range c.Routes {
		dst, err := netip.ParsePrefix(r.Destination)
		if err != nil {
			continue
		}
		add(dst.Masked(), r.Via, r.Interface, r.Metric)
	}
	return out
}

func (r *Reconciler) applyRoutes(c Config, links []netlink.Link, res *Result) error {
	want := desiredRoutes(c, links)
	var have []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := r.nl.RouteListFiltered(fam, &netlink.Route{Protocol: routeProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list routes: %w", err)
		}
		have = append(have, rs...)
	}
	found := make([]bool, len(want))
	var errs []error
	for _, h := range have {
		i := slices.IndexFunc(want, func(w wantRoute) bool { return w.matches(h) })
		if i >= 0 && !found[i] {
			found[i] = true
			continue
		}
		h := h
		if err := r.nl.RouteDel(&h); err != nil {
			errs = append(errs, fmt.Errorf("remove route %s: %w", h, err))
			continue
		}
		dst, _ := routeDst(h)
		res.Changes = append(res.Changes, fmt.Sprintf("remove route %s via %s", dst, h.Gw))
	}
	for i, w := range want {
		if found[i] {
			continue
		}
		nr := &netlink.Route{
			Dst:       ipNet(w.dst),
			LinkIndex: w.link,
			Priority:  w.metric,
			Protocol:  routeProtocol,
			Table:     unix.RT_TABLE_MAIN,
		}
		if w.gw.IsValid() {
			nr.Gw = net.IP(w.gw.AsSlice())
		} else {
			nr.Scope = netlink.SCOPE_LINK
		}
		if err := r.nl.RouteAdd(nr); err != nil {
			errs = append(errs, fmt.Errorf("add route %s: %w", w, err))
			continue
		}
		res.Changes = append(res.Changes, "add route "+w.String())
	}
	return errors.Join(errs...)
}

// routeDst is a route's destination, with the default route (which netlink
// may report as nil) as 0.0.0.0/0 or ::/0.
func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		if r.Family == netlink.FAMILY_V6 || r.Gw.To4() == nil && r.Gw != nil {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	}
	return prefixOf(r.Dst)
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(ip, ones), true
}

func ipNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}
