// Package netcfg owns the box's network configuration. For now it brings
// every physical link up and runs a DHCPv4 client on those with a carrier;
// the full reconciling manager comes with its own issue.
package netcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"keel.dev/keel/agent/atomicfile"
)

// PhysicalLinks brings up every non-loopback device link and returns those
// that report a carrier within wait.
func PhysicalLinks(wait time.Duration) ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var names []string
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || l.Type() != "device" {
			continue
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("bring up %s: %w", a.Name, err)
		}
		names = append(names, a.Name)
	}
	deadline := time.Now().Add(wait)
	var up []string
	for _, n := range names {
		for {
			if b, _ := os.ReadFile("/sys/class/net/" + n + "/carrier"); strings.TrimSpace(string(b)) == "1" {
				up = append(up, n)
				break
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return up, nil
}

// DHCP is a DHCPv4 client for one link, run as a supervised service.
type DHCP struct {
	Link       string
	Log        *slog.Logger
	ResolvConf string // written with the lease's DNS servers; "" to skip
	// OnLease is told about each lease applied (for status and health).
	OnLease func(link string, addr *net.IPNet)
}

// Run obtains a lease, applies it, renews it at T1, and releases it and
// removes the address when ctx ends.
func (d *DHCP) Run(ctx context.Context) error {
	link, err := netlink.LinkByName(d.Link)
	if err != nil {
		return fmt.Errorf("dhcp %s: %w", d.Link, err)
	}
	client, err := nclient4.New(d.Link, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return fmt.Errorf("dhcp %s: %w", d.Link, err)
	}
	defer client.Close()
	lease, err := client.Request(ctx)
	if err != nil {
		return fmt.Errorf("dhcp %s: no lease: %w", d.Link, err)
	}
	addr, err := d.apply(link, lease)
	if err != nil {
		return err
	}
	defer func() {
		// Give the address back so the server can reuse it at once.
		client.Release(lease)
		netlink.AddrDel(link, &netlink.Addr{IPNet: addr})
		d.Log.Info("dhcp lease released", "link", d.Link, "addr", addr)
	}()
	for {
		t1 := lease.ACK.IPAddressRenewalTime(lease.ACK.IPAddressLeaseTime(time.Hour) / 2)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(t1):
		}
		renewed, err := client.Renew(ctx, lease)
		if err != nil {
			d.Log.Warn("dhcp renew failed; requesting a new lease", "link", d.Link, "err", err)
			if renewed, err = client.Request(ctx); err != nil {
				return fmt.Errorf("dhcp %s: lease lost: %w", d.Link, err)
			}
		}
		lease = renewed
		if addr, err = d.apply(link, lease); err != nil {
			return err
		}
	}
}

func (d *DHCP) apply(link netlink.Link, lease *nclient4.Lease) (*net.IPNet, error) {
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	addr := &net.IPNet{IP: ack.YourIPAddr, Mask: mask}
	valid := ack.IPAddressLeaseTime(time.Hour)
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: addr, ValidLft: int(valid.Seconds()), PreferedLft: int(valid.Seconds())}); err != nil {
		return nil, fmt.Errorf("dhcp %s: add address %s: %w", d.Link, addr, err)
	}
	if routers := ack.Router(); len(routers) > 0 {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: routers[0], Dst: nil}
		if err := netlink.RouteReplace(r); err != nil && !errors.Is(err, os.ErrExist) {
			d.Log.Warn("dhcp: default route not set", "link", d.Link, "gw", routers[0], "err", err)
		}
	}
	if dns := ack.DNS(); len(dns) > 0 && d.ResolvConf != "" {
		var b strings.Builder
		for _, s := range dns {
			fmt.Fprintf(&b, "nameserver %s\n", s)
		}
		if dom := ack.DomainName(); dom != "" {
			fmt.Fprintf(&b, "search %s\n", dom)
		}
		if err := atomicfile.Write(d.ResolvConf, []byte(b.String()), 0o644); err != nil {
			d.Log.Warn("dhcp: resolv.conf not written", "err", err)
		}
	}
	d.Log.Info("dhcp lease applied", "link", d.Link, "addr", addr, "lease", valid, "server", ack.ServerIdentifier())
	if d.OnLease != nil {
		d.OnLease(d.Link, addr)
	}
	return addr, nil
}
