// Command netbench measures keel's network figures, each beside a baseline
// measured in the same run with the standard tools (`make bench`):
//
//   - Floating-IP takeover: time from the enable request to an observer's
//     neighbour entry showing the new MAC (its first update), against
//     `ip addr add` followed by `arping -U -c1` (iputils) in the same
//     namespaces.
//   - Reconcile: applying 100 addresses and 100 routes from scratch and
//     re-applying them unchanged, against the same through `ip -batch`.
//
// It needs root and works only inside network namespaces it creates and
// removes; nothing touches the host's own network.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/floatip"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

func main() {
	runs := flag.Int("runs", 9, "measured runs of each figure (the median is reported)")
	only := flag.String("only", "", `run only these figures: "takeover", "reconcile" or "failover"`)
	failoverRuns := flag.Int("failover-runs", 20, "takeovers measured for each failover figure (the 95th percentile is reported)")
	flag.Parse()
	r := &runner{}
	defer r.cleanup()
	nstest.RequireRoot(r)
	if _, err := exec.LookPath("arping"); err != nil {
		r.Fatal("netbench needs arping (Debian: iputils-arping) for the takeover baseline")
	}
	if _, err := exec.LookPath("keepalived"); err != nil {
		r.Fatal("netbench needs keepalived (Debian: keepalived) for the failover baseline")
	}
	var rows []row
	if *only == "" || *only == "takeover" {
		rows = append(rows, takeover(r, *runs)...)
	}
	if *only == "" || *only == "failover" {
		rows = append(rows, failoverRows(r, max(*runs, *failoverRuns))...)
	}
	if *only == "" || *only == "reconcile" {
		rows = append(rows, reconcile(r, *runs)...)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tvalue\tbaseline\tratio\tgoal\tmet")
	missed := false
	for _, x := range rows {
		ratio := "-"
		if x.baseline > 0 {
			ratio = fmt.Sprintf("%.2f", x.value/x.baseline)
		}
		base := "-"
		if x.baseline > 0 {
			base = fmt.Sprintf("%.2f %s", x.baseline, x.unit)
		}
		met := "yes"
		if !x.met {
			met, missed = "NO", true
		}
		fmt.Fprintf(w, "%s\t%.2f %s\t%s\t%s\t%s\t%s\n", x.figure, x.value, x.unit, base, ratio, x.goal, met)
	}
	w.Flush()
	if missed {
		r.cleanup()
		os.Exit(1)
	}
}

type row struct {
	figure          string
	value, baseline float64
	unit, goal      string
	met             bool
}

// runner lets nstest build namespaces outside a test: failures remove
// what was built and exit.
type runner struct {
	mu       sync.Mutex
	cleanups []func()
}

func (r *runner) Helper() {}
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}
func (r *runner) cleanup() {
	r.mu.Lock()
	fs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
func (r *runner) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }
func (r *runner) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "netbench: "+format+"\n", args...)
	r.cleanup()
	os.Exit(1)
}
func (r *runner) Skip(args ...any) { r.Fatal(args...) }

func median(xs []time.Duration) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}

// watcher reports when the observer's neighbour entry for ip first shows
// a given MAC, from the kernel's own notifications (polling `ip neigh`
// would measure process starts, not the takeover).
type watcher struct {
	ip   net.IP
	mu   sync.Mutex
	want string
	seen chan time.Time
}

func watchNeighbours(r *runner, path string, ip net.IP) *watcher {
	h, err := netns.GetFromPath(path)
	if err != nil {
		r.Fatalf("open observer namespace: %v", err)
	}
	r.Cleanup(func() { h.Close() })
	ch := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	if err := netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{Namespace: &h}); err != nil {
		r.Fatalf("subscribe to neighbour updates: %v", err)
	}
	r.Cleanup(func() { close(done) })
	w := &watcher{ip: ip, seen: make(chan time.Time, 1)}
	go func() {
		for u := range ch {
			now := time.Now()
			if u.Type != unix.RTM_NEWNEIGH || !u.IP.Equal(w.ip) {
				continue
			}
			w.mu.Lock()
			if w.want != "" && u.HardwareAddr.String() == w.want {
				w.want = ""
				w.seen <- now
			}
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *watcher) arm(mac net.HardwareAddr) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want = mac.String()
	select {
	case <-w.seen:
	default:
	}
}

func (w *watcher) wait(start time.Time) (time.Duration, error) {
	select {
	case t := <-w.seen:
		return t.Sub(start), nil
	case <-time.After(3 * time.Second):
		return 0, errors.New("the observer's neighbour entry did not change within 3 s")
	}
}

// shell is a shell running inside a namespace, so the baseline commands
// pay for their own process starts as they would on the box, but not for
// entering the namespace (each `ip -n` or `ip netns exec` costs tens of
// milliseconds more here, which would flatter keel).
type shell struct {
	in  io.WriteCloser
	out *bufio.Reader
}

func startShell(r *runner, n *nstest.Node) *shell {
	cmd := exec.Command("ip", "netns", "exec", n.Name, "sh")
	in, err := cmd.StdinPipe()
	if err != nil {
		r.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.Fatalf("start a shell in %s: %v", n.Name, err)
	}
	r.Cleanup(func() { in.Close(); cmd.Wait() })
	return &shell{in: in, out: bufio.NewReader(out)}
}

// run has the shell run line and waits for it to finish; it fails the
// benchmark if line does.
func (sh *shell) run(r *runner, line string) {
	if _, err := fmt.Fprintf(sh.in, "%s 2>&1; echo \"rc=$?\"\n", line); err != nil {
		r.Fatalf("shell: %v", err)
	}
	var out strings.Builder
	for {
		l, err := sh.out.ReadString('\n')
		if err != nil {
			r.Fatalf("shell: %s: %v\n%s", line, err, out.String())
		}
		if rc, ok := strings.CutPrefix(l, "rc="); ok {
			if strings.TrimSpace(rc) != "0" {
				r.Fatalf("%s: exit status %s%s", line, rc, out.String())
			}
			return
		}
		out.WriteString(l)
	}
}

func takeover(r *runner, runs int) []row {
	lab := nstest.New(r)
	a, b, obs := lab.Node("a"), lab.Node("b"), lab.Node("obs")
	for i, n := range []*nstest.Node{a, b, obs} {
		n.Exec("ip", "addr", "add", fmt.Sprintf("10.5.0.%d/24", i+1), "dev", "eth0")
	}
	// A neighbour entry younger than locktime ignores gratuitous ARP;
	// the runs follow each other faster than that.
	obs.Exec("sysctl", "-qw", "net.ipv4.neigh.eth0.locktime=0")
	const shared = "10.5.0.100"
	prefix := netip.MustParsePrefix(shared + "/24")
	fm, err := floatip.New(b.NS, nil)
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(fm.Close)
	mux := http.NewServeMux()
	fm.Routes(mux, nil)
	w := watchNeighbours(r, obs.Path, net.ParseIP(shared))
	bsh := startShell(r, b)

	// reset gives the address back to A and points the observer's entry
	// at A, as before a failover.
	reset := func() {
		b.Try("ip", "addr", "del", shared+"/24", "dev", "eth0")
		a.Exec("ip", "addr", "replace", shared+"/24", "dev", "eth0")
		obs.Exec("ip", "neigh", "replace", shared, "lladdr", a.MAC.String(), "dev", "eth0", "nud", "stale")
		a.Exec("ip", "addr", "del", shared+"/24", "dev", "eth0")
		time.Sleep(20 * time.Millisecond)
		w.arm(b.MAC)
	}
	var ours, base []time.Duration
	for i := 0; i < runs; i++ {
		reset()
		start := time.Now()
		bsh.run(r, "ip addr add "+shared+"/24 dev eth0 && arping -q -U -c1 -I eth0 "+shared)
		d, err := w.wait(start)
		if err != nil {
			r.Fatalf("baseline run %d: %v", i+1, err)
		}
		base = append(base, d)

		reset()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/api/v1/network/floating/enable",
			strings.NewReader(`{"interface":"eth0","address":"`+prefix.String()+`","force":true}`))
		start = time.Now()
		mux.ServeHTTP(rec, req)
		if rec.Code != 200 {
			r.Fatalf("enable request: %d %s", rec.Code, rec.Body)
		}
		if d, err = w.wait(start); err != nil {
			r.Fatalf("keel run %d: %v", i+1, err)
		}
		ours = append(ours, d)
		if err := fm.Disable("eth0", prefix); err != nil {
			r.Fatal(err)
		}
	}
	v, bl := median(ours), median(base)
	return []row{{figure: fmt.Sprintf("floating IP takeover to neighbour update (median of %d)", runs),
		value: v, baseline: bl, unit: "ms", goal: "<= baseline (ip addr add + arping -U)", met: v <= bl}}
}

func reconcile(r *runner, runs int) []row {
	lab := nstest.New(r)
	n := lab.Node("rec")
	var cfg netcfg.Config
	ifc := netcfg.Interface{Name: "eth0", Enabled: true}
	var add, replace strings.Builder
	for i := 0; i < 100; i++ {
		p := fmt.Sprintf("10.200.0.%d/16", i+1)
		ifc.Addresses = append(ifc.Addresses, netcfg.Address{Address: p, Enabled: true})
		fmt.Fprintf(&add, "address add %s dev eth0\n", p)
		fmt.Fprintf(&replace, "address replace %s dev eth0\n", p)
	}
	cfg.Interfaces = []netcfg.Interface{ifc}
	for i := 0; i < 100; i++ {
		d := fmt.Sprintf("172.16.%d.0/24", i)
		cfg.Routes = append(cfg.Routes, netcfg.Route{Destination: d, Via: "10.200.255.254"})
		fmt.Fprintf(&add, "route add %s via 10.200.255.254 proto static\n", d)
		fmt.Fprintf(&replace, "route replace %s via 10.200.255.254 proto static\n", d)
	}
	if err := cfg.Validate(); err != nil {
		r.Fatalf("benchmark configuration: %v", err)
	}
	dir, err := os.MkdirTemp("", "netbench")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { os.RemoveAll(dir) })
	addFile, replaceFile := filepath.Join(dir, "add"), filepath.Join(dir, "replace")
	if err := os.WriteFile(addFile, []byte(add.String()), 0o600); err != nil {
		r.Fatal(err)
	}
	if err := os.WriteFile(replaceFile, []byte(replace.String()), 0o600); err != nil {
		r.Fatal(err)
	}
	rec, err := netcfg.NewReconciler(n.NS, nil)
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(rec.Close)
	// The link settings (SLAAC off, promote_secondaries) are made once,
	// outside the timed runs: both sides then start from a link with no
	// addresses and routes.
	if _, err := rec.Apply(netcfg.Config{Interfaces: []netcfg.Interface{{Name: "eth0", Enabled: true}}}); err != nil {
		r.Fatal(err)
	}
	flush := func() {
		n.Exec("ip", "-4", "addr", "flush", "dev", "eth0")
		n.Exec("ip", "route", "flush", "proto", "static")
		if out := n.Exec("ip", "-4", "-o", "addr", "show", "dev", "eth0"); strings.TrimSpace(out) != "" {
			r.Fatalf("flush left addresses:\n%s", out)
		}
	}
	count := func() (int, int) {
		addrs := strings.Count(n.Exec("ip", "-4", "-o", "addr", "show", "dev", "eth0"), "\n")
		routes := strings.Count(n.Exec("ip", "route", "show", "proto", "static"), "\n")
		return addrs, routes
	}
	sh := startShell(r, n)
	batch := func(file string) time.Duration {
		start := time.Now()
		sh.run(r, "ip -batch "+file)
		return time.Since(start)
	}
	var scratch, noop, baseScratch, baseReapply []time.Duration
	var noopChanges uint64
	for i := 0; i < runs; i++ {
		flush()
		baseScratch = append(baseScratch, batch(addFile))
		if a, rt := count(); a != 100 || rt != 100 {
			r.Fatalf("ip -batch made %d addresses and %d routes, want 100 each", a, rt)
		}
		baseReapply = append(baseReapply, batch(replaceFile))

		flush()
		start := time.Now()
		res, err := rec.Apply(cfg)
		scratch = append(scratch, time.Since(start))
		if err != nil {
			r.Fatalf("reconcile from scratch: %v", err)
		}
		if len(res.Changes) != 200 {
			r.Fatalf("reconcile from scratch made %d changes, want 200", len(res.Changes))
		}
		if a, rt := count(); a != 100 || rt != 100 {
			r.Fatalf("reconcile made %d addresses and %d routes, want 100 each", a, rt)
		}
		before := rec.Changes()
		start = time.Now()
		if _, err := rec.Apply(cfg); err != nil {
			r.Fatalf("reconcile no-op: %v", err)
		}
		noop = append(noop, time.Since(start))
		noopChanges += rec.Changes() - before
	}
	s, bs := median(scratch), median(baseScratch)
	o, bo := median(noop), median(baseReapply)
	return []row{
		{figure: fmt.Sprintf("reconcile 100 addresses + 100 routes from scratch (median of %d)", runs),
			value: s, baseline: bs, unit: "ms", goal: "<= baseline (ip -batch add)", met: s <= bs},
		{figure: fmt.Sprintf("reconcile no-op reapply (median of %d)", runs),
			value: o, baseline: bo, unit: "ms", goal: "<= baseline (ip -batch replace)", met: o <= bo},
		{figure: "netlink changes made by the no-op reapplies",
			value: float64(noopChanges), unit: "", goal: "0", met: noopChanges == 0},
	}
}
