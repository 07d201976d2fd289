package utilities

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/netcfg/nstest"
)

// routedLab is A — R — B: two segments joined by a router namespace with
// forwarding on. All traffic stays inside these namespaces.
func routedLab(t *testing.T) (a, r, b *nstest.Node) {
	nstest.RequireRoot(t)
	left, right := nstest.New(t), nstest.New(t)
	a, r = left.Node("a"), left.Node("r")
	right.Attach(r, "eth1")
	b = right.Node("b")
	r.Exec("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		// Routers limit the ICMP errors they send; tests that run
		// traceroute back to back must not meet that limit.
		"net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
	r.Exec("ip", "addr", "add", "10.11.0.1/24", "dev", "eth0")
	r.Exec("ip", "addr", "add", "10.12.0.1/24", "dev", "eth1")
	r.Exec("ip", "addr", "add", "fd11::1/64", "dev", "eth0", "nodad")
	r.Exec("ip", "addr", "add", "fd12::1/64", "dev", "eth1", "nodad")
	a.Exec("ip", "addr", "add", "10.11.0.2/24", "dev", "eth0")
	a.Exec("ip", "addr", "add", "fd11::2/64", "dev", "eth0", "nodad")
	a.Exec("ip", "route", "add", "default", "via", "10.11.0.1")
	a.Exec("ip", "-6", "route", "add", "default", "via", "fd11::1")
	b.Exec("ip", "addr", "add", "10.12.0.2/24", "dev", "eth0")
	b.Exec("ip", "addr", "add", "fd12::2/64", "dev", "eth0", "nodad")
	b.Exec("ip", "route", "add", "default", "via", "10.12.0.1")
	b.Exec("ip", "-6", "route", "add", "default", "via", "fd12::1")
	// Link-local addresses are tentative for a second after a link comes
	// up; until then neighbour discovery, and so IPv6 forwarding, may
	// stall.
	for _, n := range []*nstest.Node{a, r, b} {
		if !nstest.Eventually(5*time.Second, func() bool {
			out, _ := n.Try("ip", "-6", "addr", "show", "tentative")
			return strings.TrimSpace(out) == ""
		}) {
			t.Fatalf("%s: addresses still tentative", n.Name)
		}
	}
	return a, r, b
}

func hopAddrs(res TraceResult) []string {
	var out []string
	for _, h := range res.Hops {
		out = append(out, h.Address)
	}
	return out
}

func TestTracerouteThroughRouter(t *testing.T) {
	a, _, _ := routedLab(t)
	resolver := &net.Resolver{PreferGo: true}
	cases := []struct {
		dst, probe string
		want       []string
	}{
		{"10.12.0.2", ProbeICMP, []string{"10.11.0.1", "10.12.0.2"}},
		{"10.12.0.2", ProbeUDP, []string{"10.11.0.1", "10.12.0.2"}},
		{"fd12::2", ProbeICMP, []string{"fd11::1", "fd12::2"}},
		{"fd12::2", ProbeUDP, []string{"fd11::1", "fd12::2"}},
	}
	for _, c := range cases {
		t.Run(c.dst+"/"+c.probe, func(t *testing.T) {
			var res TraceResult
			start := time.Now()
			err := a.NS.Do(func() (err error) {
				res, err = Traceroute(context.Background(), resolver, c.dst, TraceOptions{Probe: c.probe, Timeout: time.Second})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%v in %v: %+v", c.probe, time.Since(start).Round(time.Millisecond), res.Hops)
			if !res.Reached || strings.Join(hopAddrs(res), " ") != strings.Join(c.want, " ") || res.Error != "" {
				t.Fatalf("hops %q reached %v (%s); want %q", hopAddrs(res), res.Reached, res.Error, c.want)
			}
			for i, h := range res.Hops {
				if h.TTL != i+1 || h.TimeMS <= 0 || h.Error != "" || len(h.Probes) != DefaultQueries {
					t.Errorf("hop %d: %+v", i+1, h)
				}
				for _, p := range h.Probes {
					if p.Address != h.Address || p.TimeMS <= 0 || p.Error != "" {
						t.Errorf("hop %d, a probe: %+v", i+1, p)
					}
				}
			}
		})
	}
}

func TestTracerouteStops(t *testing.T) {
	a, _, _ := routedLab(t)
	resolver := &net.Resolver{PreferGo: true}
	trace := func(dst string, opts TraceOptions) TraceResult {
		t.Helper()
		var res TraceResult
		if err := a.NS.Do(func() (err error) {
			res, err = Traceroute(context.Background(), resolver, dst, opts)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return res
	}
	// The hop limit ends it at the router.
	if res := trace("10.12.0.2", TraceOptions{MaxHops: 1}); res.Reached || len(res.Hops) != 1 || res.Hops[0].Address != "10.11.0.1" || !strings.Contains(res.Error, "within 1 hops") {
		t.Errorf("max 1 hop: %+v", res)
	}
	// The router has no route onward: it says so and the trace ends.
	// Linux sends a router's first "unreachable" to a new peer only once
	// its rate limit has gathered a token (up to a second), so the first
	// probe may go unanswered.
	res := trace("10.99.0.5", TraceOptions{Timeout: 1500 * time.Millisecond})
	if n := len(res.Hops); res.Reached || n == 0 || n > 2 || res.Hops[n-1].Address != "10.11.0.1" || !strings.Contains(res.Error, "10.11.0.1 answered that 10.99.0.5 is unreachable") {
		t.Errorf("no route at the router: %+v", res)
	}
	// Nobody holds 10.11.0.77 on A's own segment, so no probe is ever
	// answered and the total time limit stops the trace.
	start := time.Now()
	res = trace("10.11.0.77", TraceOptions{Timeout: 200 * time.Millisecond, Limit: 700 * time.Millisecond})
	took := time.Since(start)
	if res.Reached || took > time.Second || !strings.Contains(res.Error, "time limit") || len(res.Hops) > 4 {
		t.Errorf("silent path, 700 ms limit: took %v: %+v", took, res)
	}
	for _, h := range res.Hops {
		if h.Address != "" || !strings.Contains(h.Error, "no answer") {
			t.Errorf("hop with no one to answer: %+v", h)
		}
	}
}

func TestTracerouteHTTP(t *testing.T) {
	a, _, _ := routedLab(t)
	mux := http.NewServeMux()
	Routes(mux, &net.Resolver{PreferGo: true})
	call := func(body string) (int, string) {
		rec := httptest.NewRecorder()
		if err := a.NS.Do(func() error {
			mux.ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/utilities/traceroute", strings.NewReader(body)))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return rec.Code, rec.Body.String()
	}
	code, body := call(`{"host":"10.12.0.2","probe":"udp","max_hops":5,"timeout_ms":500,"queries":1}`)
	var res TraceResult
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || !res.Reached || len(res.Hops) != 2 || res.Probe != "udp" {
		t.Fatalf("traceroute: %d %s", code, body)
	}
	for _, h := range res.Hops {
		if len(h.Probes) != 1 {
			t.Errorf("queries 1: hop %+v", h)
		}
	}
	for _, bad := range []struct{ body, field string }{
		{`{"host":"10.12.0.2","max_hops":31}`, "max_hops"},
		{`{"host":"10.12.0.2","probe":"tcp"}`, "probe"},
		{`{"host":"10.12.0.2","queries":6}`, "queries"},
		{`{"host":"10.12.0.2","queries":-1}`, "queries"},
		{`{"host":"10.12.0.2","timeout_ms":60000}`, "timeout_ms"},
		{`{"max_hops":3}`, "host"},
	} {
		if code, body := call(bad.body); code != 400 || !strings.Contains(body, `"error":"`+bad.field+":") {
			t.Errorf("%s: %d %s", bad.body, code, body)
		}
	}
}
