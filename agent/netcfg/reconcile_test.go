package netcfg_test

import (
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func mustConfig(t *testing.T, js string) netcfg.Config {
	t.Helper()
	var c netcfg.Config
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("config invalid: %v", err)
	}
	return c
}

const staticConfig = `{
  "interfaces": [{"name": "eth0", "mtu": 1400, "addresses": [
    {"address": "10.9.0.2/24"},
    {"address": "10.9.0.3/24"},
    {"address": "10.9.0.9/24", "enabled": false},
    {"address": "fd00:9::2/64"},
    {"address": "10.9.0.50/24", "shared": true}
  ]}],
  "gateways": [{"via": "10.9.0.1"}, {"via": "fd00:9::1", "interface": "eth0"}],
  "routes": [
    {"destination": "10.20.0.0/16", "via": "10.9.0.254", "metric": 50},
    {"destination": "10.30.0.0/16", "interface": "eth0"},
    {"destination": "fd00:20::/48", "via": "fd00:9::fe"}
  ]
}`

func TestReconcileTwiceChangesNothing(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	node := lab.Node("a")
	node.Exec("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0")
	// Addresses the reconciler must not touch: one with a lifetime, as
	// DHCP adds them, and the shared address held by the floating-IP
	// service.
	node.Exec("ip", "addr", "add", "10.9.0.77/24", "dev", "eth0", "valid_lft", "300", "preferred_lft", "300")
	node.Exec("ip", "addr", "add", "10.9.0.50/24", "dev", "eth0")

	r, err := netcfg.NewReconciler(node.NS, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg := mustConfig(t, staticConfig)

	res, err := r.Apply(cfg)
	if err != nil {
		t.Fatalf("first apply: %v", err)
	}
	first := r.Changes()
	t.Logf("first apply: %d netlink changes: %q", first, res.Changes)
	if first == 0 {
		t.Fatal("first apply changed nothing")
	}
	addrs := node.Exec("ip", "addr", "show", "dev", "eth0")
	for _, want := range []string{"mtu 1400", "10.9.0.2/24", "10.9.0.3/24", "fd00:9::2/64", "10.9.0.77/24", "10.9.0.50/24"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("after apply, eth0 lacks %q:\n%s", want, addrs)
		}
	}
	if strings.Contains(addrs, "10.9.0.9/") {
		t.Errorf("disabled address 10.9.0.9 was added:\n%s", addrs)
	}
	routes := node.Exec("ip", "route", "show") + node.Exec("ip", "-6", "route", "show")
	for _, want := range []string{"default via 10.9.0.1", "10.20.0.0/16 via 10.9.0.254", "metric 50", "10.30.0.0/16 dev eth0", "default via fd00:9::1", "fd00:20::/48 via fd00:9::fe"} {
		if !strings.Contains(routes, want) {
			t.Errorf("after apply, routes lack %q:\n%s", want, routes)
		}
	}

	res, err = r.Apply(cfg)
	if err != nil {
		t.Fatalf("second apply: %v", err)
	}
	if n := r.Changes() - first; n != 0 || len(res.Changes) != 0 {
		t.Fatalf("second apply made %d netlink changes: %q", n, res.Changes)
	}

	// Dropping one address removes that address and nothing else.
	cfg.Interfaces[0].Addresses = slices.Delete(cfg.Interfaces[0].Addresses, 1, 2)
	before := r.Changes()
	res, err = r.Apply(cfg)
	if err != nil {
		t.Fatalf("apply without 10.9.0.3: %v", err)
	}
	if n := r.Changes() - before; n != 1 || len(res.Changes) != 1 || res.Changes[0] != "remove address 10.9.0.3/24 from eth0" {
		t.Fatalf("removing one address made %d changes: %q", n, res.Changes)
	}
	addrs = node.Exec("ip", "addr", "show", "dev", "eth0")
	if strings.Contains(addrs, "10.9.0.3/") {
		t.Errorf("10.9.0.3 still there:\n%s", addrs)
	}
	for _, want := range []string{"10.9.0.2/24", "fd00:9::2/64", "10.9.0.77/24", "10.9.0.50/24"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("removing 10.9.0.3 also removed %q:\n%s", want, addrs)
		}
	}
	if routes2 := node.Exec("ip", "route", "show") + node.Exec("ip", "-6", "route", "show"); routes2 != routes {
		t.Errorf("routes changed:\nbefore:\n%s\nafter:\n%s", routes, routes2)
	}

	// Disabling the link takes it down; applying an empty route list
	// removes only the routes the reconciler added.
	cfg.Interfaces[0].Enabled = false
	cfg.Gateways, cfg.Routes = nil, nil
	if _, err := r.Apply(cfg); err != nil {
		t.Fatalf("apply with eth0 disabled: %v", err)
	}
	if link := node.Exec("ip", "link", "show", "dev", "eth0"); strings.Contains(link, ",UP") {
		t.Errorf("eth0 still up:\n%s", link)
	}
	if addrs := node.Exec("ip", "addr", "show", "dev", "eth0"); strings.Contains(addrs, "10.9.0.2/") || !strings.Contains(addrs, "10.9.0.50/") {
		t.Errorf("disabled link: want its static address gone and the shared one kept:\n%s", addrs)
	}
}

func TestReconcileMissingLinkReported(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	node := lab.Node("m")
	r, err := netcfg.NewReconciler(node.NS, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg := mustConfig(t, `{"interfaces":[{"mac":"02:00:00:00:00:99","addresses":[{"address":"10.1.0.2/24"}]},
		{"mac":"`+node.MAC.String()+`","addresses":[{"address":"10.2.0.2/24"}]}]}`)
	res, err := r.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Missing) != 1 || res.Missing[0] != "02:00:00:00:00:99" {
		t.Errorf("missing = %q, want the unknown MAC", res.Missing)
	}
	if addrs := node.Exec("ip", "addr", "show", "dev", "eth0"); !strings.Contains(addrs, "10.2.0.2/24") {
		t.Errorf("interface matched by MAC not configured:\n%s", addrs)
	}
}
