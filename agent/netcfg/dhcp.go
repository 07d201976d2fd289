package netcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/atomicfile"
)

// dhcpRouteProtocol marks routes that come from a lease, so the client
// removes exactly those when the lease ends.
const dhcpRouteProtocol = netlink.RouteProtocol(unix.RTPROT_DHCP)

// DHCP is a DHCPv4 client for one link, run as a supervised service. It
// holds a lease for its whole life: renewing at T1 with the server that
// gave it, rebinding with any server at T2, removing the address when the
// lease expires (then starting over), and releasing it when stopped.
type DHCP struct {
	Link       string
	Log        *slog.Logger
	ResolvConf string // written with the lease's DNS servers; "" to skip
	// OnLease is told about each lease applied (for status and health).
	OnLease func(link string, addr *net.IPNet)
	// OnChange is told about each lease applied, and with ok false when
	// the lease is lost, expires or is released.
	OnChange func(l Lease, ok bool)

	NS     NS  // the zero NS is the agent's own namespace
	Metric int // of the routes the lease installs
	// RetryWait is the pause between failed attempts to get a lease;
	// default 5 s.
	RetryWait time.Duration
	// Timeout bounds one exchange with the server (it is retried twice);
	// default 2 s.
	Timeout time.Duration

	nl Netlink // set by Run
}

// requested asks for the options the agent uses beyond the library's
// defaults.
var requested = dhcpv4.WithRequestedOptions(
	dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionDomainName, dhcpv4.OptionHostName, dhcpv4.OptionNTPServers,
	dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionClasslessStaticRoute,
)

// Run keeps a lease until ctx ends, then releases it and removes the
// address. It returns an error only when the link or its socket fail.
func (d *DHCP) Run(ctx context.Context) error {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.RetryWait == 0 {
		d.RetryWait = 5 * time.Second
	}
	if d.Timeout == 0 {
		d.Timeout = 2 * time.Second
	}
	h, err := d.NS.Netlink()
	if err != nil {
		return fmt.Errorf("dhcp %s: open netlink: %w", d.Link, err)
	}
	defer h.Close()
	d.nl = h
	link, err := h.LinkByName(d.Link)
	if err != nil {
		return fmt.Errorf("dhcp %s: %w", d.Link, err)
	}
	var client *nclient4.Client
	// The raw socket must be opened inside the link's namespace.
	err = d.NS.Do(func() error {
		var err error
		client, err = nclient4.New(d.Link, nclient4.WithTimeout(d.Timeout), nclient4.WithRetry(2))
		return err
	})
	if err != nil {
		return fmt.Errorf("dhcp %s: %w", d.Link, err)
	}
	defer client.Close()

	for {
		lease, raw, err := d.acquire(ctx, client)
		if err != nil {
			return nil // ctx ended
		}
		if err := d.apply(link, lease, netip.Prefix{}); err != nil {
			d.Log.Warn("dhcp lease not applied", "link", d.Link, "err", err)
			d.drop(link, lease)
			if !sleep(ctx, d.RetryWait) {
				return nil
			}
			continue
		}
		if err := d.hold(ctx, client, link, lease, raw); err != nil {
			d.Log.Warn("dhcp lease lost", "link", d.Link, "err", err)
			continue
		}
		return nil
	}
}

// acquire runs DISCOVER/OFFER/REQUEST/ACK until it gets a lease or ctx
// ends.
func (d *DHCP) acquire(ctx context.Context, client *nclient4.Client) (Lease, *nclient4.Lease, error) {
	for {
		raw, err := client.Request(ctx, requested)
		if err == nil {
			return leaseFromACK(d.Link, raw.ACK, time.Now()), raw, nil
		}
		if ctx.Err() != nil {
			return Lease{}, nil, ctx.Err()
		}
		d.Log.Warn("dhcp: no lease yet", "link", d.Link, "err", err)
		if !sleep(ctx, d.RetryWait) {
			return Lease{}, nil, ctx.Err()
		}
	}
}

// hold renews and rebinds the lease until ctx ends (returning nil after
// releasing it) or the lease is lost (returning why, with the address
// already removed).
func (d *DHCP) hold(ctx context.Context, client *nclient4.Client, link netlink.Link, lease Lease, raw *nclient4.Lease) error {
	for {
		t1 := lease.Obtained.Add(time.Duration(lease.T1))
		t2 := lease.Obtained.Add(time.Duration(lease.T2))
		expiry := lease.Expiry()
		if !sleepUntil(ctx, t1) {
			d.release(link, lease, raw)
			return nil
		}
		renewed, err := d.renew(ctx, raw, lease, t2)
		if err == nil {
			d.Log.Debug("dhcp lease renewed", "link", d.Link, "server", lease.Server)
		} else if isNak(err) {
			d.drop(link, lease)
			return fmt.Errorf("renew refused: %w", err)
		} else if ctx.Err() == nil {
			// No answer from our server by T2: ask any server.
			d.Log.Warn("dhcp renew failed; rebinding", "link", d.Link, "err", err)
			renewed, err = d.extend(ctx, client, raw, netip.Addr{}, expiry)
			if isNak(err) {
				d.drop(link, lease)
				return fmt.Errorf("rebind refused: %w", err)
			}
		}
		if ctx.Err() != nil {
			d.release(link, lease, raw)
			return nil
		}
		if err != nil {
			d.drop(link, lease)
			return fmt.Errorf("lease expired at %s: %w", expiry.Format(time.TimeOnly), err)
		}
		next := leaseFromACK(d.Link, renewed.ACK, time.Now())
		if err := d.apply(link, next, lease.Address); err != nil {
			d.drop(link, lease)
			return err
		}
		lease, raw = next, renewed
	}
}

// renew asks the server that gave the lease to extend it, from the
// leased address: the kernel drops unicast packets from 0.0.0.0 as
// martians, so the raw broadcast socket cannot do this.
func (d *DHCP) renew(ctx context.Context, raw *nclient4.Lease, l Lease, until time.Time) (*nclient4.Lease, error) {
	uc, err := d.unicastClient(l.Address.Addr())
	if err != nil {
		return nil, err
	}
	defer uc.Close()
	return d.extend(ctx, uc, raw, l.Server, until)
}

// unicastClient is a client on a UDP socket bound to the leased address.
func (d *DHCP) unicastClient(addr netip.Addr) (*nclient4.Client, error) {
	var c *nclient4.Client
	err := d.NS.Do(func() error {
		var err error
		c, err = nclient4.New(d.Link, nclient4.WithTimeout(d.Timeout), nclient4.WithRetry(2),
			nclient4.WithUnicast(&net.UDPAddr{IP: net.IP(addr.AsSlice()), Port: nclient4.ClientPort}))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open unicast socket on %s: %w", addr, err)
	}
	return c, nil
}

// extend sends REQUESTs for the lease (to server when valid: renewing;
// broadcast to any otherwise: rebinding) until one is answered or until.
// Between tries it waits half the time left, at least RetryWait, as RFC
// 2131 section 4.4.5 suggests.
func (d *DHCP) extend(ctx context.Context, client *nclient4.Client, raw *nclient4.Lease, server netip.Addr, until time.Time) (*nclient4.Lease, error) {
	req, err := dhcpv4.NewRenewFromAck(raw.ACK, requested,
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: nclient4.ServerPort}
	match := nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	if server.IsValid() {
		dest.IP = net.IP(server.AsSlice())
		match = nclient4.IsAll(nclient4.IsCorrectServer(dest.IP), match)
	}
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	for {
		resp, err := client.SendAndRead(ctx, dest, req, match)
		if err == nil {
			if resp.MessageType() == dhcpv4.MessageTypeNak {
				return nil, &nclient4.ErrNak{Offer: raw.Offer, Nak: resp}
			}
			return &nclient4.Lease{Offer: raw.Offer, ACK: resp, CreationTime: time.Now()}, nil
		}
		wait := max(time.Until(until)/2, d.RetryWait)
		if time.Until(until) <= wait || !sleep(ctx, wait) {
			return nil, fmt.Errorf("no answer from %s: %w", dest.IP, err)
		}
	}
}

// apply puts the lease's address (replacing old, when the server changed
// it) and routes on the link. The address carries the lease's lifetime,
// so the kernel drops it at expiry even if this client is stuck, and the
// reconciler knows it is not a static address.
func (d *DHCP) apply(link netlink.Link, l Lease, old netip.Prefix) error {
	// Rounded up and a second more, so that this client's own expiry
	// (which also removes routes and tells OnChange) comes first.
	left := int(math.Ceil(time.Until(l.Expiry()).Seconds())) + 1
	if left < 1 {
		left = 1
	}
	if old.IsValid() && old != l.Address {
		if err := d.nl.AddrDel(link, &netlink.Addr{IPNet: ipNet(old)}); err != nil {
			d.Log.Warn("dhcp: old address not removed", "link", d.Link, "addr", old, "err", err)
		}
	}
	addr := &netlink.Addr{IPNet: ipNet(l.Address), ValidLft: left, PreferedLft: left}
	if err := d.nl.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("dhcp %s: add address %s: %w", d.Link, l.Address, err)
	}
	if err := d.applyRoutes(link, leaseRoutes(l)); err != nil {
		d.Log.Warn("dhcp: routes not all set", "link", d.Link, "err", err)
	}
	if d.ResolvConf != "" && len(l.DNS) > 0 {
		if err := atomicfile.Write(d.ResolvConf, ResolvConf(l.DNS, append(domainList(l.Domain), l.Search...)), 0o644); err != nil {
			d.Log.Warn("dhcp: resolv.conf not written", "err", err)
		}
	}
	d.Log.Info("dhcp lease applied", "link", d.Link, "addr", l.Address, "lease", time.Duration(l.Duration), "server", l.Server)
	if d.OnLease != nil {
		d.OnLease(d.Link, ipNet(l.Address))
	}
	if d.OnChange != nil {
		d.OnChange(l, true)
	}
	return nil
}

// leaseRoutes are the routes a lease asks for: its classless routes when
// it has any (RFC 3442 says the router option is then ignored), else a
// default route through the first router.
func leaseRoutes(l Lease) []LeaseRoute {
	if len(l.Routes) > 0 {
		return l.Routes
	}
	if len(l.Routers) > 0 {
		return []LeaseRoute{{Destination: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Via: l.Routers[0]}}
	}
	return nil
}

func (d *DHCP) applyRoutes(link netlink.Link, want []LeaseRoute) error {
	have, err := d.nl.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{LinkIndex: link.Attrs().Index, Protocol: dhcpRouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes on %s: %w", d.Link, err)
	}
	var errs []error
	found := make([]bool, len(want))
	for _, h := range have {
		dst, _ := routeDst(h)
		gw := addrOf(h.Gw)
		keep := false
		for i, w := range want {
			if !found[i] && w.Destination == dst && w.Via == gw && h.Priority == d.Metric {
				found[i], keep = true, true
				break
			}
		}
		if !keep {
			h := h
			if err := d.nl.RouteDel(&h); err != nil {
				errs = append(errs, fmt.Errorf("remove route %s: %w", dst, err))
			}
		}
	}
	for i, w := range want {
		if found[i] {
			continue
		}
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: ipNet(w.Destination), Priority: d.Metric,
			Protocol: dhcpRouteProtocol, Table: unix.RT_TABLE_MAIN}
		if w.Via.IsValid() {
			r.Gw = net.IP(w.Via.AsSlice())
		} else {
			r.Scope = netlink.SCOPE_LINK
		}
		if err := d.nl.RouteAdd(r); err != nil {
			errs = append(errs, fmt.Errorf("add route %s via %s: %w", w.Destination, w.Via, err))
		}
	}
	return errors.Join(errs...)
}

// drop removes the lease's address and routes and tells OnChange.
func (d *DHCP) drop(link netlink.Link, l Lease) {
	if err := d.applyRoutes(link, nil); err != nil {
		d.Log.Warn("dhcp: routes not removed", "link", d.Link, "err", err)
	}
	if err := d.nl.AddrDel(link, &netlink.Addr{IPNet: ipNet(l.Address)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		d.Log.Warn("dhcp: address not removed", "link", d.Link, "addr", l.Address, "err", err)
	}
	d.Log.Info("dhcp address removed", "link", d.Link, "addr", l.Address)
	if d.OnChange != nil {
		d.OnChange(l, false)
	}
}

// release gives the address back so the server can reuse it at once, then
// removes it.
func (d *DHCP) release(link netlink.Link, l Lease, raw *nclient4.Lease) {
	err := func() error {
		uc, err := d.unicastClient(l.Address.Addr())
		if err != nil {
			return err
		}
		defer uc.Close()
		return uc.Release(raw)
	}()
	if err != nil {
		d.Log.Warn("dhcp release not sent", "link", d.Link, "err", err)
	} else {
		d.Log.Info("dhcp lease released", "link", d.Link, "addr", l.Address)
	}
	d.drop(link, l)
}

func isNak(err error) bool {
	var nak *nclient4.ErrNak
	return errors.As(err, &nak)
}

// ResolvConf renders a resolv.conf.
func ResolvConf(servers []netip.Addr, search []string) []byte {
	var b strings.Builder
	b.WriteString("# written by the keel agent\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	return []byte(b.String())
}

func domainList(d string) []string {
	if d == "" {
		return nil
	}
	return []string{d}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func sleepUntil(ctx context.Context, when time.Time) bool {
	return sleep(ctx, time.Until(when))
}
