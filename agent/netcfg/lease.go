package netcfg

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Lease is what a DHCPv4 server handed out, in the form status and the
// rest of the agent use.
type Lease struct {
	Link     string       `json:"link"`
	Address  netip.Prefix `json:"address"`
	Server   netip.Addr   `json:"server"`
	Routers  []netip.Addr `json:"routers,omitempty"`
	DNS      []netip.Addr `json:"dns,omitempty"`
	Domain   string       `json:"domain,omitempty"`
	Search   []string     `json:"search,omitempty"`
	Hostname string       `json:"hostname,omitempty"`
	NTP      []netip.Addr `json:"ntp,omitempty"`    // option 42
	Routes   []LeaseRoute `json:"routes,omitempty"` // option 121
	Obtained time.Time    `json:"obtained"`
	Duration Seconds      `json:"lease_seconds"`
	T1       Seconds      `json:"renew_seconds"`
	T2       Seconds      `json:"rebind_seconds"`
}

// LeaseRoute is a classless static route (option 121); Via is invalid for
// a route straight out of the link.
type LeaseRoute struct {
	Destination netip.Prefix `json:"destination"`
	Via         netip.Addr   `json:"via,omitzero"`
}

// Seconds is a duration that reads as whole seconds in JSON.
type Seconds time.Duration

func (s Seconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, int64(time.Duration(s)/time.Second), 10), nil
}

// Expiry is when the lease ends unless renewed.
func (l Lease) Expiry() time.Time { return l.Obtained.Add(time.Duration(l.Duration)) }

// leaseFromACK reads the options the agent uses out of an ACK. Timers
// default as RFC 2131 says: T1 at half the lease, T2 at seven eighths.
func leaseFromACK(link string, ack *dhcpv4.DHCPv4, now time.Time) Lease {
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	ones, _ := mask.Size()
	ip, _ := netip.AddrFromSlice(ack.YourIPAddr.To4())
	d := ack.IPAddressLeaseTime(time.Hour)
	l := Lease{
		Link:     link,
		Address:  netip.PrefixFrom(ip, ones),
		Server:   addrOf(ack.ServerIdentifier()),
		Routers:  addrsOf(ack.Router()),
		DNS:      addrsOf(ack.DNS()),
		Domain:   ack.DomainName(),
		Hostname: ack.HostName(),
		NTP:      addrsOf(ack.NTPServers()),
		Obtained: now,
		Duration: Seconds(d),
		T1:       Seconds(ack.IPAddressRenewalTime(d / 2)),
		T2:       Seconds(ack.IPAddressRebindingTime(d * 7 / 8)),
	}
	if s := ack.DomainSearch(); s != nil {
		l.Search = s.Labels
	}
	for _, r := range ack.ClasslessStaticRoute() {
		p, ok := prefixOf(r.Dest)
		if !ok {
			continue
		}
		lr := LeaseRoute{Destination: p.Masked()}
		if gw := addrOf(r.Router); gw.IsValid() && !gw.IsUnspecified() {
			lr.Via = gw
		}
		l.Routes = append(l.Routes, lr)
	}
	// Guard against servers that send timers out of order.
	if l.T2 <= l.T1 || l.T2 >= l.Duration {
		l.T1, l.T2 = Seconds(d/2), Seconds(d*7/8)
	}
	return l
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func addrsOf(ips []net.IP) []netip.Addr {
	var out []netip.Addr
	for _, ip := range ips {
		if a := addrOf(ip); a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}
