package netcfg_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

// A router advertising a prefix (dnsmasq's router advertisements) gives a
// box with SLAAC an address in it and a default route; turning SLAAC off
// takes both away at once, and a reapply changes nothing.
func TestSLAACFromRouterAdvertisements(t *testing.T) {
	nstest.RequireRoot(t)
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Skip("skipped: needs dnsmasq (apt-get install dnsmasq)")
	}
	lab := nstest.New(t)
	rtr, box := lab.Node("rtr"), lab.Node("box")
	rtr.Exec("ip", "addr", "add", "fd00:7::1/64", "dev", "eth0", "nodad")
	rtr.Exec("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	box.Exec("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
	dir := t.TempDir()
	dnsmasq := rtr.Start("dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
		"--pid-file="+filepath.Join(dir, "pid"), "--leasefile-ro", "--port=0", "--user=root",
		"--interface=eth0", "--bind-interfaces", "--log-facility=-",
		"--enable-ra", "--dhcp-range=fd00:7::,ra-only,64,10m", "--ra-param=eth0,4")

	r, err := netcfg.NewReconciler(box.NS, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	slaac := mustConfig(t, `{"interfaces":[{"name":"eth0","addresses":[{"method":"slaac"}]}]}`)
	if _, err := r.Apply(slaac); err != nil {
		t.Fatal(err)
	}
	addrs := func() string { return box.Exec("ip", "-6", "addr", "show", "dev", "eth0", "scope", "global") }
	routes := func() string { return box.Exec("ip", "-6", "route", "show", "default") }
	if !nstest.Eventually(20*time.Second, func() bool {
		return strings.Contains(addrs(), "inet6 fd00:7::") && strings.Contains(routes(), "proto ra")
	}) {
		t.Fatalf("no SLAAC address and default route from the router:\n%s\n%s\ndnsmasq:\n%s", addrs(), routes(), dnsmasq.Output())
	}
	if a := addrs(); !strings.Contains(a, "/64") || !strings.Contains(a, "dynamic") {
		t.Errorf("SLAAC address is not a dynamic /64:\n%s", a)
	}
	before := r.Changes()
	if res, err := r.Apply(slaac); err != nil || r.Changes() != before {
		t.Fatalf("reapplying SLAAC: %v, %d changes %q", err, r.Changes()-before, res.Changes)
	}

	static := mustConfig(t, `{"interfaces":[{"name":"eth0","addresses":[{"address":"fd00:8::2/64"}]}]}`)
	res, err := r.Apply(static)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("turning SLAAC off: %q", res.Changes)
	if a := addrs(); strings.Contains(a, "fd00:7::") || !strings.Contains(a, "fd00:8::2/64") {
		t.Errorf("after turning SLAAC off, want only the static address:\n%s", a)
	}
	if rt := routes(); strings.Contains(rt, "proto ra") {
		t.Errorf("the router's default route stayed:\n%s", rt)
	}
	// Advertisements keep coming; with SLAAC off they change nothing.
	time.Sleep(5 * time.Second)
	if a := addrs(); strings.Contains(a, "fd00:7::") {
		t.Errorf("an advertisement brought the SLAAC address back:\n%s", a)
	}
	before = r.Changes()
	if res, err := r.Apply(static); err != nil || r.Changes() != before {
		t.Fatalf("reapplying static: %v, %d changes %q", err, r.Changes()-before, res.Changes)
	}
}
