package netcfg

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProtocol marks the routes the reconciler owns, so it can tell them
// from the kernel's, DHCP's and any an operator added by hand.
const routeProtocol = netlink.RouteProtocol(unix.RTPROT_STATIC)

// Reconciler makes the kernel's network state match a Config, changing
// only what differs: applying the same Config twice makes no netlink
// change the second time.
type Reconciler struct {
	nl      Netlink
	sysctl  Sysctl
	log     *slog.Logger
	changes atomic.Uint64
	close   func()

	// Keep reports addresses the reconciler must leave in place although
	// the configuration does not list them, e.g. floating addresses the
	// floating-IP service holds. May be nil.
	Keep func(link string, p netip.Prefix) bool
}

// NewReconciler works in namespace ns (the zero NS is the agent's own).
func NewReconciler(ns NS, log *slog.Logger) (*Reconciler, error) {
	h, err := ns.Netlink()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	r := NewReconcilerWith(h, procSysctl{ns: ns}, log)
	r.close = h.Close
	return r, nil
}

// NewReconcilerWith uses the given kernel interfaces, for tests and for
// sharing a handle.
func NewReconcilerWith(nl Netlink, sc Sysctl, log *slog.Logger) *Reconciler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reconciler{sysctl: sc, log: log}
	r.nl = counting{Netlink: nl, n: &r.changes}
	return r
}

// Close releases the netlink handle.
func (r *Reconciler) Close() {
	if r.close != nil {
		r.close()
	}
}

// Changes is the number of state-changing kernel calls (netlink and
// sysctl writes) made so far.
func (r *Reconciler) Changes() uint64 { return r.changes.Load() }

// Result says what an Apply did.
type Result struct {
	Changes []string `json:"changes"`           // one line per change, for the log and the operator
	Missing []string `json:"missing,omitempty"` // configured interfaces with no matching link
}

// Apply reconciles the kernel against c, which must be valid. It carries
// on past a failing step so one bad link does not leave the rest
// unconfigured, and returns every failure joined.
func (r *Reconciler) Apply(c Config) (Result, error) {
	var res Result
	var errs []error
	links, err := r.nl.LinkList()
	if err != nil {
		return res, fmt.Errorf("list links: %w", err)
	}
	resolved := make([]netlink.Link, len(c.Interfaces))
	for i, ifc := range c.Interfaces {
		l := findLink(links, ifc)
		if l == nil {
			res.Missing = append(res.Missing, ifc.Key())
			continue
		}
		resolved[i] = l
		if err := r.applyLink(l, ifc, &res); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.applyRoutes(c, resolved, &res); err != nil {
		errs = append(errs, err)
	}
	for _, ch := range res.Changes {
		r.log.Info("network change", "change", ch)
	}
	return res, errors.Join(errs...)
}

func (r *Reconciler) applyLink(l netlink.Link, ifc Interface, res *Result) error {
	a := l.Attrs()
	name := a.Name
	var errs []error
	if ifc.MTU != 0 && a.MTU != ifc.MTU {
		if err := r.nl.LinkSetMTU(l, ifc.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set MTU %d on %s: %w", ifc.MTU, name, err))
		} else {
			res.Changes = append(res.Changes, fmt.Sprintf("set MTU of %s to %d", name, ifc.MTU))
		}
	}
	up := a.Flags&net.FlagUp != 0
	switch {
	case ifc.Enabled && !up:
		if err := r.nl.LinkSetUp(l); err != nil {
			errs = append(errs, fmt.Errorf("bring up %s: %w", name, err))
		} else {
			res.Changes = append(res.Changes, "bring up "+name)
		}
	case !ifc.Enabled && up:
		if err := r.nl.LinkSetDown(l); err != nil {
			errs = append(errs, fmt.Errorf("take down %s: %w", name, err))
		} else {
			res.Changes = append(res.Changes, "take down "+name)
		}
	}
	if off, err := r.applySLAAC(name, ifc.UsesSLAAC(), res); err != nil {
		errs = append(errs, err)
	} else if off {
		if err := r.dropSLAAC(l, res); err != nil {
			errs = append(errs, err)
		}
	}
	// Before any address is removed: without promote_secondaries the
	// kernel silently drops every other address of a subnet with its
	// primary, so removing 10.0.0.1 would also take 10.0.0.2 away.
	if err := r.promoteSecondaries(name, res); err != nil {
		errs = append(errs, err)
	}
	if err := r.applyAddrs(l, ifc, res); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// applySLAAC turns router-advertisement processing on or off. Off also
// means no default route from router advertisements: a static IPv6
// configuration should not be overridden by a stray router. It reports
// whether it just turned SLAAC off.
func (r *Reconciler) applySLAAC(link string, on bool, res *Result) (turnedOff bool, err error) {
	want := "0"
	if on {
		want = "1"
	}
	for _, p := range []string{"accept_ra", "autoconf"} {
		key := "net/ipv6/conf/" + link + "/" + p
		got, err := r.sysctl.Get(key)
		if isNotExist(err) {
			if on {
				return false, fmt.Errorf("enable SLAAC on %s: the kernel has IPv6 disabled", link)
			}
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if got == want {
			continue
		}
		r.changes.Add(1)
		if err := r.sysctl.Set(key, want); err != nil {
			return false, err
		}
		res.Changes = append(res.Changes, fmt.Sprintf("set %s to %s", key, want))
		turnedOff = !on
	}
	return turnedOff, nil
}

// dropSLAAC removes what router advertisements gave a link whose SLAAC was
// just turned off: the kernel would keep the addresses until their
// lifetimes end and the routes until the router's lifetime does. Global
// IPv6 addresses with lifetimes are SLAAC's (keel has no DHCPv6 client);
// routes with protocol "ra" are the kernel's from advertisements.
func (r *Reconciler) dropSLAAC(l netlink.Link, res *Result) error {
	name := l.Attrs().Name
	var errs []error
	addrs, err := r.nl.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return fmt.Errorf("list addresses on %s: %w", name, err)
	}
	for _, a := range addrs {
		p, ok := prefixOf(a.IPNet)
		if !ok || a.Flags&unix.IFA_F_PERMANENT != 0 || !p.Addr().IsGlobalUnicast() {
			continue
		}
		if err := r.nl.AddrDel(l, &netlink.Addr{IPNet: a.IPNet}); err != nil {
			errs = append(errs, fmt.Errorf("remove SLAAC address %s from %s: %w", p, name, err))
			continue
		}
		res.Changes = append(res.Changes, fmt.Sprintf("remove SLAAC address %s from %s", p, name))
	}
	routes, err := r.nl.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: l.Attrs().Index, Protocol: unix.RTPROT_RA},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list routes on %s: %w", name, err))...)
	}
	for _, rt := range routes {
		if err := r.nl.RouteDel(&rt); err != nil {
			errs = append(errs, fmt.Errorf("remove route %s from router advertisements on %s: %w", rt.Dst, name, err))
			continue
		}
		res.Changes = append(res.Changes, fmt.Sprintf("remove route %s from router advertisements on %s", raRouteDst(rt), name))
	}
	return errors.Join(errs...)
}

func raRouteDst(rt netlink.Route) string {
	if rt.Dst == nil {
		return "default"
	}
	if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
		return "default"
	}
	return rt.Dst.String()
}

func (r *Reconciler) applyAddrs(l netlink.Link, ifc Interface, res *Result) error {
	name := l.Attrs().Name
	want := map[netip.Prefix]bool{}
	shared := map[netip.Addr]bool{}
	for _, a := range ifc.Addresses {
		if a.method() != MethodStatic {
			continue
		}
		p, err := netip.ParsePrefix(a.Address)
		if err != nil {
			continue // Validate reports it
		}
		if a.Shared {
			shared[p.Addr()] = true
			continue
		}
		if a.Enabled && ifc.Enabled {
			want[p] = true
		}
	}
	have, err := r.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses on %s: %w", name, err)
	}
	var errs []error
	for _, a := range have {
		p, ok := prefixOf(a.IPNet)
		if !ok {
			continue
		}
		// Only permanent addresses are the reconciler's: DHCP and SLAAC
		// addresses carry lifetimes, and link-local ones are the kernel's.
		if a.Flags&unix.IFA_F_PERMANENT == 0 || p.Addr().IsLinkLocalUnicast() || shared[p.Addr()] {
			continue
		}
		if want[p] {
			delete(want, p)
			continue
		}
		if r.Keep != nil && r.Keep(name, p) {
			continue
		}
		if err := r.nl.AddrDel(l, &netlink.Addr{IPNet: a.IPNet}); err != nil {
			errs = append(errs, fmt.Errorf("remove address %s from %s: %w", p, name, err))
			continue
		}
		res.Changes = append(res.Changes, fmt.Sprintf("remove address %s from %s", p, name))
	}
	for _, p := range sortedPrefixes(want) {
		if err := r.nl.AddrAdd(l, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
			errs = append(errs, fmt.Errorf("add address %s on %s: %w", p, name, err))
			continue
		}
		res.Changes = append(res.Changes, fmt.Sprintf("add address %s on %s", p, name))
	}
	return errors.Join(errs...)
}

// promoteSecondaries makes the kernel keep the other addresses of a
// subnet when its primary address is removed.
func (r *Reconciler) promoteSecondaries(link string, res *Result) error {
	key := "net/ipv4/conf/" + link + "/promote_secondaries"
	got, err := r.sysctl.Get(key)
	if isNotExist(err) || got == "1" {
		return nil // no IPv4 on this kernel or link
	}
	if err != nil {
		return err
	}
	r.changes.Add(1)
	if err := r.sysctl.Set(key, "1"); err != nil {
		return err
	}
	res.Changes = append(res.Changes, "set "+key+" to 1")
	return nil
}
