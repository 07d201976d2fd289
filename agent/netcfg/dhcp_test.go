package netcfg_test

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

// leaseLog records what a DHCP client reports.
type leaseLog struct {
	mu     sync.Mutex
	events []string
	last   netcfg.Lease
}

func (l *leaseLog) onChange(lease netcfg.Lease, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok {
		l.events = append(l.events, "got "+lease.Address.String())
		l.last = lease
	} else {
		l.events = append(l.events, "lost "+lease.Address.String())
	}
}

func (l *leaseLog) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func (l *leaseLog) lease() netcfg.Lease {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// shortLeaseServer is a DHCP server with a lease short enough to watch a
// lease's whole life in seconds (dnsmasq will not go below 2 minutes).
type shortLeaseServer struct {
	lease    time.Duration
	mu       sync.Mutex
	renewals int
}

func (s *shortLeaseServer) handle(conn net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
	var typ dhcpv4.MessageType
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
	default:
		return
	}
	renewal := !m.ClientIPAddr.IsUnspecified()
	if renewal {
		s.mu.Lock()
		s.renewals++
		s.mu.Unlock()
	}
	reply, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(net.IPv4(10, 7, 0, 50)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithLeaseTime(uint32(s.lease/time.Second)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 7, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptRouter(net.IPv4(10, 7, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptDNS(net.IPv4(10, 7, 0, 53))),
		dhcpv4.WithOption(dhcpv4.OptNTPServers(net.IPv4(10, 7, 0, 123))),
	)
	if err != nil {
		return
	}
	dest := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	if renewal {
		dest.IP = m.ClientIPAddr
	}
	conn.WriteTo(reply.ToBytes(), dest)
}

func (s *shortLeaseServer) renewCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewals
}

// serveDHCP gives node's eth0 10.7.0.1/24 and runs handle there as a DHCP
// server until stop (or the test's end).
func serveDHCP(t *testing.T, node *nstest.Node, handle server4.Handler) (stop func()) {
	t.Helper()
	node.Exec("ip", "addr", "add", "10.7.0.1/24", "dev", "eth0")
	var srv *server4.Server
	if err := node.NS.Do(func() error {
		var err error
		srv, err = server4.NewServer("eth0", &net.UDPAddr{Port: dhcpv4.ServerPort}, handle)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	stop = sync.OnceFunc(func() { srv.Close() })
	t.Cleanup(stop)
	return stop
}

func hasAddr(n *nstest.Node, addr string) bool {
	out, _ := n.Try("ip", "-o", "addr", "show", "dev", "eth0")
	return strings.Contains(out, " "+addr+" ")
}

func TestDHCPLeaseRenewsAndExpires(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	srvNode, cliNode := lab.Node("srv"), lab.Node("cli")
	fake := &shortLeaseServer{lease: 4 * time.Second}
	stopServer := serveDHCP(t, srvNode, fake.handle)

	var log leaseLog
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	d := &netcfg.DHCP{Link: "eth0", NS: cliNode.NS, Log: testLog(t), OnChange: log.onChange,
		RetryWait: 300 * time.Millisecond, Timeout: 400 * time.Millisecond}
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()

	start := time.Now()
	if !nstest.Eventually(5*time.Second, func() bool { return hasAddr(cliNode, "10.7.0.50/24") }) {
		t.Fatalf("no address from DHCP; events %q", log.events)
	}
	t.Logf("address after %v", time.Since(start).Round(time.Millisecond))
	l := log.lease()
	if !slices.Contains(l.NTP, netip.MustParseAddr("10.7.0.123")) || l.Server != netip.MustParseAddr("10.7.0.1") {
		t.Errorf("lease options not surfaced: %+v", l)
	}
	if routes := cliNode.Exec("ip", "route"); !strings.Contains(routes, "default via 10.7.0.1 dev eth0 proto dhcp") {
		t.Errorf("no default route from the lease:\n%s", routes)
	}

	// T1 is 2 s: the client renews with the server, unicast.
	if !nstest.Eventually(3500*time.Millisecond, func() bool { return fake.renewCount() >= 1 && log.count("got") >= 2 }) {
		t.Fatalf("lease not renewed at T1; events %q", log.events)
	}
	if log.count("lost") != 0 || !hasAddr(cliNode, "10.7.0.50/24") {
		t.Fatalf("address lost while renewing; events %q", log.events)
	}
	t.Logf("renewed after %v", time.Since(start).Round(time.Millisecond))

	// The server goes away: renewing and rebinding fail, and the address
	// goes when the lease expires, not before.
	stopServer()
	gone := time.Now()
	expiry := log.lease().Expiry()
	if !nstest.Eventually(6*time.Second, func() bool { return !hasAddr(cliNode, "10.7.0.50/24") }) {
		t.Fatalf("address still there 6 s after the server went; events %q", log.events)
	}
	removed := time.Now()
	t.Logf("address removed %v after the server stopped", removed.Sub(gone).Round(time.Millisecond))
	if removed.Before(expiry) {
		t.Errorf("address removed at %s, before the lease expired at %s", removed.Format(time.StampMilli), expiry.Format(time.StampMilli))
	}
	if !nstest.Eventually(time.Second, func() bool { return log.count("lost") == 1 }) {
		t.Errorf("events %q, want one loss", log.events)
	}
	if routes := cliNode.Exec("ip", "route"); strings.Contains(routes, "proto dhcp") {
		t.Errorf("lease routes left behind:\n%s", routes)
	}
}

func TestDHCPWithDnsmasqOptionsAndRelease(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("skipped: needs dnsmasq (apt-get install dnsmasq)")
	}
	lab := nstest.New(t)
	srvNode, cliNode := lab.Node("srv"), lab.Node("cli")
	srvNode.Exec("ip", "addr", "add", "10.8.0.1/24", "dev", "eth0")
	dir := t.TempDir()
	// Everything on the command line and nothing from /etc: the host's
	// dnsmasq configuration and lease file are never read or written.
	dnsmasq := srvNode.Start("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
		"--pid-file="+filepath.Join(dir, "pid"), "--leasefile-ro", "--port=0", "--user=root",
		"--interface=eth0", "--bind-interfaces", "--no-ping", "--dhcp-authoritative",
		"--log-dhcp", "--log-facility=-",
		"--dhcp-range=10.8.0.50,10.8.0.60,255.255.255.0,2m",
		"--dhcp-option=option:router,10.8.0.1",
		"--dhcp-option=option:dns-server,10.8.0.53",
		"--dhcp-option=option:domain-name,lab.test",
		"--dhcp-option=option:ntp-server,10.8.0.123",
		"--dhcp-option=option:classless-static-route,10.99.0.0/16,10.8.0.254,0.0.0.0/0,10.8.0.1",
	)

	var log leaseLog
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	d := &netcfg.DHCP{Link: "eth0", NS: cliNode.NS, Log: testLog(t), OnChange: log.onChange,
		RetryWait: 300 * time.Millisecond, Timeout: time.Second}
	go func() { done <- d.Run(ctx) }()

	if !nstest.Eventually(8*time.Second, func() bool { return log.count("got") > 0 }) {
		cancel()
		<-done
		t.Fatalf("no lease from dnsmasq:\n%s", dnsmasq.Output())
	}
	l := log.lease()
	t.Logf("lease: %+v", l)
	if !l.Address.IsValid() || !netip.MustParsePrefix("10.8.0.0/24").Contains(l.Address.Addr()) || l.Address.Bits() != 24 {
		t.Errorf("address %s, want one in 10.8.0.0/24", l.Address)
	}
	if time.Duration(l.Duration) != 2*time.Minute || time.Duration(l.T1) != time.Minute {
		t.Errorf("lease %v, T1 %v; want 2m and 1m", time.Duration(l.Duration), time.Duration(l.T1))
	}
	want := netcfg.Lease{
		Routers: []netip.Addr{netip.MustParseAddr("10.8.0.1")},
		DNS:     []netip.Addr{netip.MustParseAddr("10.8.0.53")},
		Domain:  "lab.test",
		NTP:     []netip.Addr{netip.MustParseAddr("10.8.0.123")},
		Routes: []netcfg.LeaseRoute{
			{Destination: netip.MustParsePrefix("10.99.0.0/16"), Via: netip.MustParseAddr("10.8.0.254")},
			{Destination: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("10.8.0.1")},
		},
	}
	if !slices.Equal(l.Routers, want.Routers) || !slices.Equal(l.DNS, want.DNS) || l.Domain != want.Domain ||
		!slices.Equal(l.NTP, want.NTP) || !slices.Equal(l.Routes, want.Routes) {
		t.Errorf("options: got %+v\nwant %+v", l, want)
	}
	routes := cliNode.Exec("ip", "route")
	for _, r := range []string{"10.99.0.0/16 via 10.8.0.254 dev eth0 proto dhcp", "default via 10.8.0.1 dev eth0 proto dhcp"} {
		if !strings.Contains(routes, r) {
			t.Errorf("classless route %q not installed:\n%s", r, routes)
		}
	}

	// Stopping the client releases the lease and removes the address.
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if hasAddr(cliNode, l.Address.String()) {
		t.Errorf("address %s still there after stop", l.Address)
	}
	if !nstest.Eventually(2*time.Second, func() bool { return strings.Contains(dnsmasq.Output(), "DHCPRELEASE(eth0) "+l.Address.Addr().String()) }) {
		t.Errorf("dnsmasq saw no release:\n%s", dnsmasq.Output())
	}
}
