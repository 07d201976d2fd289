package netcfg_test

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

// The boot's wait for leases ends when the DHCP link with a cable has its
// address, not before, and does not wait for a link without a cable.
func TestManagerWaitLeases(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	srvNode, box := lab.Node("srv"), lab.Node("box")
	// A second link whose peer is down has no carrier: an unplugged port.
	box.Exec("ip", "link", "add", "nocable", "type", "veth", "peer", "name", "nocable-peer")
	box.Exec("ip", "link", "set", "nocable", "up")

	// The server answers only once the test opens the gate, like one
	// that is slow to answer at boot.
	gate := make(chan struct{})
	fake := &shortLeaseServer{lease: time.Minute}
	serveDHCP(t, srvNode, func(c net.PacketConn, a net.Addr, m *dhcpv4.DHCPv4) {
		<-gate
		fake.handle(c, a, m)
	})

	dir := t.TempDir()
	m, err := netcfg.NewManager(netcfg.ManagerOptions{NS: box.NS, Path: filepath.Join(dir, "network.json"), ResolvConf: filepath.Join(dir, "resolv.conf"), Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	dhcp := []netcfg.Address{{Method: netcfg.MethodDHCP, Enabled: true}}
	if _, err := m.Apply(netcfg.Config{Interfaces: []netcfg.Interface{
		{Name: "eth0", Enabled: true, Addresses: dhcp},
		{Name: "nocable", Enabled: true, Addresses: dhcp},
	}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	short, cancelShort := context.WithTimeout(ctx, 500*time.Millisecond)
	waiting, err := m.WaitLeases(short)
	cancelShort()
	if err != nil || !slices.Equal(waiting, []string{"eth0"}) {
		t.Fatalf("before the server answers: waiting for %q (%v), want eth0 alone", waiting, err)
	}

	close(gate)
	long, cancelLong := context.WithTimeout(ctx, 20*time.Second)
	defer cancelLong()
	start := time.Now()
	if waiting, err := m.WaitLeases(long); err != nil || len(waiting) > 0 {
		t.Fatalf("after the server answered: still waiting for %q after %s (%v)", waiting, time.Since(start), err)
	}
	if out, _ := box.Try("ip", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.7.0.50/24") {
		t.Fatalf("the wait ended without the lease's address on eth0:\n%s", out)
	}
}
