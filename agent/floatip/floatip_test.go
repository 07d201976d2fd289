package floatip_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/floatip"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

// post sends body to path through mux and returns the status and body.
func post(mux http.Handler, path, body string) (int, string) {
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)))
	return rec.Code, rec.Body.String()
}

func neighbour(n *nstest.Node, ip string) string {
	out, _ := n.Try("ip", "neigh", "show", ip, "dev", "eth0")
	return out
}

// TestTakeover moves a shared address from A to B while an observer talks
// to it: B is refused while A holds it, then forced in after A lets go,
// and the observer's neighbour entry follows to B's MAC without the
// observer asking.
func TestTakeover(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	a, b, obs := lab.Node("a"), lab.Node("b"), lab.Node("obs")
	for i, n := range []*nstest.Node{a, b, obs} {
		n.Exec("ip", "addr", "add", "10.5.0."+string(rune('1'+i))+"/24", "dev", "eth0")
		n.Exec("ip", "addr", "add", "fd00:5::"+string(rune('1'+i))+"/64", "dev", "eth0", "nodad")
	}
	// A neighbour entry younger than locktime (1 s) ignores gratuitous
	// ARP; the test moves faster than that.
	obs.Exec("sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0")

	ma, err := floatip.New(a.NS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Close()
	mb, err := floatip.New(b.NS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()

	for _, shared := range []string{"10.5.0.100/24", "fd00:5::100/64"} {
		t.Run(shared, func(t *testing.T) {
			p := netip.MustParsePrefix(shared)
			ip := p.Addr().String()
			if err := ma.Enable("eth0", p, false); err != nil {
				t.Fatalf("A enable: %v", err)
			}
			if !ma.Holds("eth0", p) {
				t.Error("A does not report holding it")
			}
			// One UDP datagram makes the observer resolve the address.
			if out, err := obs.Try("bash", "-c", "echo hi > /dev/udp/"+ip+"/9"); err != nil {
				t.Fatalf("observer send: %v\n%s", err, out)
			}
			nstest.Eventually(time.Second, func() bool { return strings.Contains(neighbour(obs, ip), "lladdr") })
			if e := neighbour(obs, ip); !strings.Contains(e, a.MAC.String()) {
				t.Fatalf("observer's entry %q, want A's MAC %s", e, a.MAC)
			}

			{
				err := mb.Enable("eth0", p, false)
				var conflict *floatip.ConflictError
				if !errors.As(err, &conflict) || conflict.Owner.String() != a.MAC.String() || !strings.Contains(err.Error(), a.MAC.String()) {
					t.Fatalf("B enable without force while A holds it: %v; want a conflict naming %s", err, a.MAC)
				}
			}

			if err := ma.Disable("eth0", p); err != nil {
				t.Fatalf("A disable: %v", err)
			}
			if out, _ := a.Try("ip", "addr", "show", "dev", "eth0"); strings.Contains(out, shared) {
				t.Fatalf("A still has %s:\n%s", shared, out)
			}
			start := time.Now()
			if err := mb.Enable("eth0", p, true); err != nil {
				t.Fatalf("B enable with force: %v", err)
			}
			if !nstest.Eventually(2*time.Second, func() bool { return strings.Contains(neighbour(obs, ip), b.MAC.String()) }) {
				t.Fatalf("observer's entry %q did not move to B's MAC %s", neighbour(obs, ip), b.MAC)
			}
			t.Logf("observer's entry moved to B %v after the enable call started", time.Since(start).Round(time.Millisecond))
			if err := mb.Disable("eth0", p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestEnableFreeAddressNeedsNoForce(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	a := lab.Node("a")
	lab.Node("b") // someone else on the segment, not holding the address
	m, err := floatip.New(a.NS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, s := range []string{"10.6.0.100/24", "fd00:6::100/64"} {
		p := netip.MustParsePrefix(s)
		start := time.Now()
		if err := m.Enable("eth0", p, false); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: probe and announce took %v", s, time.Since(start).Round(time.Millisecond))
		// Enabling again is a re-announcement, not a conflict with itself.
		if err := m.Enable("eth0", p, false); err != nil {
			t.Fatalf("second enable of %s: %v", s, err)
		}
		if err := m.Disable("eth0", p); err != nil {
			t.Fatal(err)
		}
		if err := m.Disable("eth0", p); err != nil {
			t.Fatalf("disabling an absent address %s: %v", s, err)
		}
	}
}

func TestHTTPConflictAndBadInput(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	a, b := lab.Node("a"), lab.Node("b")
	a.Exec("ip", "addr", "add", "10.4.0.100/24", "dev", "eth0")
	b.Exec("ip", "addr", "add", "10.4.0.2/24", "dev", "eth0")
	m, err := floatip.New(b.NS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mux := http.NewServeMux()
	m.Routes(mux, nil)
	if code, body := post(mux, "/api/v1/network/floating/enable", `{"interface":"eth0","address":"10.4.0.100/24"}`); code != 409 || !strings.Contains(body, a.MAC.String()) {
		t.Errorf("enable held address: %d %s", code, body)
	}
	if code, body := post(mux, "/api/v1/network/floating/enable", `{"interface":"eth0","address":"10.4.0.300/24"}`); code != 400 || !strings.Contains(body, `"error":"address:`) {
		t.Errorf("bad address: %d %s", code, body)
	}
	if code, body := post(mux, "/api/v1/network/floating/disable", `{"interface":"eth0","address":"10.4.0.100/24"}`); code != 200 {
		t.Errorf("disable: %d %s", code, body)
	}
}

// A floating address enabled through the API is kept in the network
// configuration: after a reboot the box probes for it and takes it back,
// and one another host took meanwhile is reported, not taken.
func TestFloatingAddressesSurviveAReboot(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	a, b := lab.Node("a"), lab.Node("b")
	a.Exec("ip", "addr", "add", "10.6.0.1/24", "dev", "eth0")
	path := filepath.Join(t.TempDir(), "network.json")
	boot := func() (*netcfg.Manager, *floatip.Manager, *http.ServeMux) {
		fm, err := floatip.New(b.NS, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(fm.Close)
		nm, err := netcfg.NewManager(netcfg.ManagerOptions{NS: b.NS, Path: path, Keep: fm.Holds})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		fm.Routes(mux, nm.SetShared)
		return nm, fm, mux
	}
	nm, _, mux := boot()
	if _, err := nm.Apply(netcfg.Config{Interfaces: []netcfg.Interface{{Name: "eth0", Enabled: true,
		Addresses: []netcfg.Address{{Address: "10.6.0.2/24", Enabled: true}}}}}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"10.6.0.100/24", "10.6.0.101/24", "10.6.0.102/24"} {
		if code, body := post(mux, "/api/v1/network/floating/enable", `{"interface":"eth0","address":"`+addr+`"}`); code != 200 {
			t.Fatalf("enable %s: %d %s", addr, code, body)
		}
	}
	if code, body := post(mux, "/api/v1/network/floating/disable", `{"interface":"eth0","address":"10.6.0.102/24"}`); code != 200 {
		t.Fatalf("disable: %d %s", code, body)
	}
	// The box goes down; meanwhile host A takes 10.6.0.101.
	for _, addr := range []string{"10.6.0.100/24", "10.6.0.101/24"} {
		b.Exec("ip", "addr", "del", addr, "dev", "eth0")
	}
	a.Exec("ip", "addr", "add", "10.6.0.101/24", "dev", "eth0")

	nm2, fm2, mux2 := boot()
	shared, err := nm2.SharedAddresses()
	if err != nil || len(shared) != 2 {
		t.Fatalf("the configuration holds %+v (%v); want 10.6.0.100 and 10.6.0.101", shared, err)
	}
	err = fm2.Restore(shared)
	var conflict *floatip.ConflictError
	if !errors.As(err, &conflict) || conflict.Addr.String() != "10.6.0.101" {
		t.Errorf("restore: %v; want the conflict on 10.6.0.101", err)
	}
	if out := b.Exec("ip", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.6.0.100/24") || strings.Contains(out, "10.6.0.101") || strings.Contains(out, "10.6.0.102") {
		t.Errorf("after the restore B has:\n%s", out)
	}
	rec := httptest.NewRecorder()
	mux2.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/network/floating", nil))
	if body := rec.Body.String(); !strings.Contains(body, `"address":"10.6.0.100/24","held":true`) || !strings.Contains(body, a.MAC.String()) {
		t.Errorf("GET /api/v1/network/floating: %s", body)
	}
	// Re-applying the configuration keeps the shared address.
	if _, err := nm2.Apply(nm2.Config()); err != nil {
		t.Fatal(err)
	}
	if out := b.Exec("ip", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.6.0.100/24") {
		t.Errorf("a re-apply dropped the floating address:\n%s", out)
	}
}

// The endpoints touch only addresses they added: a configured address is
// neither disabled nor taken over as floating (409), and stays.
func TestConfiguredAddressesAreNotTouched(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	b := lab.Node("b")
	b.Exec("ip", "addr", "add", "10.7.0.2/24", "dev", "eth0")
	m, err := floatip.New(b.NS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	mux := http.NewServeMux()
	m.Routes(mux, nil)
	for _, path := range []string{"/api/v1/network/floating/disable", "/api/v1/network/floating/enable"} {
		for _, addr := range []string{"10.7.0.2/24", "10.7.0.2/32"} {
			if code, body := post(mux, path, `{"interface":"eth0","address":"`+addr+`"}`); code != http.StatusConflict || !strings.Contains(body, "network configuration") {
				t.Errorf("%s %s: %d %s", path, addr, code, body)
			}
		}
	}
	if out, _ := b.Try("ip", "addr", "show", "dev", "eth0"); !strings.Contains(out, "10.7.0.2/24") {
		t.Errorf("the configured address is gone:\n%s", out)
	}
}

// A disable that removes the address the client talks to answers 202
// with a token first; unconfirmed, the address comes back; confirmed, it
// stays away.
func TestDisablingTheClientsAddressNeedsConfirmation(t *testing.T) {
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	b := lab.Node("b")
	b.Exec("ip", "addr", "add", "10.8.0.2/24", "dev", "eth0")
	m, err := floatip.New(b.NS, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.ConfirmTimeout = 300 * time.Millisecond
	mux := http.NewServeMux()
	m.Routes(mux, nil)
	p := netip.MustParsePrefix("10.8.0.100/24")
	disable := func() (int, map[string]any) {
		req := httptest.NewRequest("POST", "/api/v1/network/floating/disable", strings.NewReader(`{"interface":"eth0","address":"10.8.0.100/24"}`))
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.ParseIP("10.8.0.100"), Port: 443}))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		var v map[string]any
		json.Unmarshal(rec.Body.Bytes(), &v)
		return rec.Code, v
	}
	has := func() bool {
		out, _ := b.Try("ip", "addr", "show", "dev", "eth0")
		return strings.Contains(out, "10.8.0.100/24")
	}

	if err := m.Enable("eth0", p, true); err != nil {
		t.Fatal(err)
	}
	code, v := disable()
	if code != http.StatusAccepted || v["confirm_token"] == nil || v["rollback_at"] == nil {
		t.Fatalf("disable over the address itself: %d %v", code, v)
	}
	if has() {
		t.Fatal("the address is still there after the 202")
	}
	nstest.Eventually(3*time.Second, func() bool { return has() && m.Holds("eth0", p) })
	if !has() || !m.Holds("eth0", p) {
		t.Fatal("an unconfirmed disable was not undone")
	}

	code, v = disable()
	if code != http.StatusAccepted {
		t.Fatalf("second disable: %d %v", code, v)
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/network/floating/confirm", strings.NewReader(`{"token":"`+v["confirm_token"].(string)+`"}`)))
	if rec.Code != http.StatusOK {
		t.Fatalf("confirm: %d %s", rec.Code, rec.Body)
	}
	time.Sleep(600 * time.Millisecond)
	if has() || m.Holds("eth0", p) {
		t.Error("a confirmed disable was undone")
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/network/floating/confirm", strings.NewReader(`{"token":"`+v["confirm_token"].(string)+`"}`)))
	if rec.Code != http.StatusNotFound {
		t.Errorf("confirm twice: %d %s", rec.Code, rec.Body)
	}
}
