package netcfg_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

func TestManagerHTTPStaticAndDHCP(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	srvNode, box := lab.Node("srv"), lab.Node("box")
	fake := &shortLeaseServer{lease: time.Minute}
	serveDHCP(t, srvNode, fake.handle)

	dir := t.TempDir()
	var mu sync.Mutex
	var ntp []string
	var hostname string
	m, err := netcfg.NewManager(netcfg.ManagerOptions{
		NS: box.NS, Path: filepath.Join(dir, "network.json"), ResolvConf: filepath.Join(dir, "resolv.conf"), Log: testLog(t),
		SetHostname: func(h string) error { mu.Lock(); hostname = h; mu.Unlock(); return nil },
		OnLease: func(l netcfg.Lease, ok bool) {
			mu.Lock()
			defer mu.Unlock()
			if ok {
				for _, a := range l.NTP {
					ntp = append(ntp, a.String())
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	mux := http.NewServeMux()
	m.Routes(mux)
	put := func(body string) (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("PUT", "/api/v1/network", strings.NewReader(body)))
		return rec.Code, rec.Body.String()
	}

	code, body := put(`{"interfaces":[{"name":"eth0","addresses":[{"address":"10.7.0.9/24"},{"address":"10.7.0.300/24"}]}],"gateways":[{"via":"192.168.1.1"}]}`)
	if code != 400 || !strings.Contains(body, `"error":"interfaces[0].addresses[1].address: \"10.7.0.300/24\" is not a valid CIDR`) ||
		!strings.Contains(body, "gateways[0].via: 192.168.1.1 is on no configured subnet") {
		t.Fatalf("invalid PUT: %d %s", code, body)
	}
	if _, err := os.Stat(filepath.Join(dir, "network.json")); err == nil {
		t.Fatal("an invalid configuration was saved")
	}

	code, body = put(`{"interfaces":[{"name":"eth0","addresses":[{"address":"10.7.0.9/24"},{"method":"dhcp"}]}],"hostname":"box-1"}`)
	if code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if !nstest.Eventually(5*time.Second, func() bool {
		out, _ := box.Try("ip", "-o", "addr", "show", "dev", "eth0")
		return strings.Contains(out, "10.7.0.9/24") && strings.Contains(out, "10.7.0.50/24")
	}) {
		out, _ := box.Try("ip", "addr")
		t.Fatalf("static and DHCP addresses not both there:\n%s", out)
	}
	if !nstest.Eventually(2*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "resolv.conf"))
		return strings.Contains(string(b), "nameserver 10.7.0.53")
	}) {
		t.Error("resolv.conf lacks the lease's DNS server")
	}
	// The lease's address can show before its options are handed on.
	if !nstest.Eventually(2*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return hostname == "box-1" && len(ntp) > 0 && ntp[0] == "10.7.0.123"
	}) {
		mu.Lock()
		t.Errorf("hostname %q, NTP from lease %v", hostname, ntp)
		mu.Unlock()
	}

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/network", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"address":"10.7.0.50/24"`) || !strings.Contains(rec.Body.String(), `"ntp":["10.7.0.123"]`) {
		t.Errorf("GET: %d %s", rec.Code, rec.Body.String())
	}

	// Reapplying the same configuration changes nothing; the DHCP
	// address survives it.
	before := m.Reconciler().Changes()
	if code, body := put(`{"interfaces":[{"name":"eth0","addresses":[{"address":"10.7.0.9/24"},{"method":"dhcp"}]}],"hostname":"box-1"}`); code != 200 {
		t.Fatalf("second PUT: %d %s", code, body)
	}
	if n := m.Reconciler().Changes() - before; n != 0 {
		t.Errorf("reapply made %d netlink changes", n)
	}
	if out, _ := box.Try("ip", "-o", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.7.0.50/24") {
		t.Errorf("reapply removed the DHCP address:\n%s", out)
	}

	// Turning DHCP off stops the client, which releases the lease, and
	// the answer comes once the address is gone: a client that checks
	// right away sees the change made.
	if code, body := put(`{"interfaces":[{"name":"eth0","addresses":[{"address":"10.7.0.9/24"},{"method":"dhcp","enabled":false}]}]}`); code != 200 {
		t.Fatalf("third PUT: %d %s", code, body)
	}
	if out, _ := box.Try("ip", "-o", "addr", "show", "dev", "eth0"); strings.Contains(out, "10.7.0.50/24") || !strings.Contains(out, "10.7.0.9/24") {
		t.Fatalf("DHCP address not released when the PUT answered:\n%s", out)
	}
	saved, _ := os.ReadFile(filepath.Join(dir, "network.json"))
	if !strings.Contains(string(saved), `"method": "dhcp",`) {
		t.Errorf("saved configuration:\n%s", saved)
	}
}
