package vmtest

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/apps"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/netcfg/nstest"
	"keel.dev/keel/agent/webui"
	"keel.dev/keel/qemu/pairlab"
)

// The vendor guide's two ways of upgrading a failover pair, step by step
// on one pair: synchronously to 1.1.0 (back up the primary, sync, break,
// upgrade the primary, then the backup, establish again with the same
// roles), then asynchronously to 1.2.0 (sync, break, upgrade the backup
// first and check it, swing the shared address to it, upgrade the old
// primary, establish again the other way round).
func TestFailoverPairUpgrades(t *testing.T) {
	e := Require(t)
	// Nothing here depends on timing (automatic failover is off): it
	// runs beside the other tests.
	t.Parallel()
	key := VendorKey(t)
	p := bootPair(t, e.Image)
	a, b := p.a, p.b
	appFile(t, a, "site.txt", "v1")
	p.establish(a, b, "")
	if st := GetStatus(t, b.VM, TestPassword); appState(t, st) != apps.StateHeld {
		t.Errorf("the backup's application is %s, want held", appState(t, st))
	}
	if code, body := APIBody(t, b.VM, "POST", "/api/v1/users", TestPassword, `{"name":"ops","password":"ops-password-1"}`); code != http.StatusConflict || !strings.Contains(string(body), "KEEL-PAIR-A") {
		t.Errorf("a change of a synced setting on the backup: %d %s", code, body)
	}
	if code, body := upload(t, a.VM, "", []byte("not a package")); code != http.StatusConflict || !strings.Contains(string(body), "Break the failover relationship first") {
		t.Errorf("an install on a paired primary: %d %s", code, body)
	}
	pkg110, pkg120 := e.basePackage(t, key, "1.1.0"), e.basePackage(t, key, "1.2.0")

	// Synchronous: the primary keeps its role.
	backupOf(t, a)
	rep := p.syncNow(b)
	t.Logf("first sync: %s", rep.Result)
	breakPair(t, b)
	appFileIs(t, b, "site.txt", "v1") // the backup runs its app again, on the synced data
	upgrade(t, a, pkg110, "1.1.0")
	if !holds(t, a, pairlab.Shared) {
		t.Error("the primary did not take the shared address back after its upgrade")
	}
	upgrade(t, b, pkg110, "1.1.0")
	p.establish(a, b, "")

	// Asynchronous: the backup goes first and becomes primary.
	appFile(t, a, "site.txt", "v2")
	p.syncNow(b)
	breakPair(t, b)
	upgrade(t, b, pkg120, "1.2.0")
	appFileIs(t, b, "site.txt", "v2")
	mustJSON[map[string]any](t, a.VM, "POST", "/api/v1/network/floating/disable", fmt.Sprintf(`{"interface":"eth1","address":%q}`, pairlab.Shared))
	mustJSON[map[string]any](t, b.VM, "POST", "/api/v1/network/floating/enable", fmt.Sprintf(`{"interface":"eth1","address":%q}`, pairlab.Shared))
	if mac := p.arp(pairlab.SharedIP); !strings.EqualFold(mac, b.MAC) {
		t.Errorf("after the swing the shared address answers from %s, want B's %s", mac, b.MAC)
	}
	upgrade(t, a, pkg120, "1.2.0")
	// This time on B's Failover page, as the guide does it.
	br := newBrowser(t, b.VM)
	br.login(TestPassword)
	br.step("establish on the Failover page", chromedp.Navigate(br.base+"/failover"), chromedp.WaitVisible(chromedp.CSS("#failover-peer-address")),
		chromedp.SendKeys(chromedp.CSS("#failover-peer-address"), a.Addr), chromedp.SendKeys(chromedp.CSS("#failover-reverse-address"), b.Addr),
		chromedp.Click(chromedp.CSS(`#failover-establish button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#failover-break")))
	if r := br.text("#failover-role"); !strings.Contains(r, "primary") {
		t.Errorf("B's Failover page after establishing: role %q", r)
	}
	br.shot("failover-primary")
	br.base = fmt.Sprintf("https://127.0.0.1:%d%s", a.VM.HTTPSPort(), webui.Prefix)
	br.login(TestPassword)
	br.step("the backup's Failover page", chromedp.Navigate(br.base+"/failover"), chromedp.WaitVisible(chromedp.CSS("#failover-sync-now")))
	if m := br.text("#failover-message"); !strings.Contains(m, "backup of KEEL-PAIR-B") {
		t.Errorf("A's Failover page: %q", m)
	}
	br.step("sync now", chromedp.Click(chromedp.CSS(`#failover-sync-now button`)), chromedp.WaitVisible(chromedp.CSS(".message")))
	br.shot("failover-backup")
	if st := p.status(b); st.Role != "primary" || len(st.Shared) != 1 || !st.Shared[0].Held {
		t.Errorf("B after the second establish: %+v", st)
	}
	if st := GetStatus(t, a.VM, TestPassword); appState(t, st) != apps.StateHeld {
		t.Errorf("A's application is %s as backup, want held", appState(t, st))
	}
}

// appState is the application's state in a box's status.
func appState(t *testing.T, st api.Status) string {
	t.Helper()
	var a apps.Status
	if err := json.Unmarshal(st.App, &a); err != nil {
		t.Fatalf("the status's app part: %v", err)
	}
	return a.State
}

func backupOf(t *testing.T, x *pairlab.Box) {
	t.Helper()
	code, body := call(t, x.VM, "POST", "/api/v1/backup", map[string]string{"Content-Type": "application/json"}, []byte(`{"password":"backup-password-1"}`))
	if code != http.StatusOK || len(body) < 1024 {
		t.Fatalf("%s: backup: %d, %d bytes", x.Name, code, len(body))
	}
}

func breakPair(t *testing.T, x *pairlab.Box) {
	t.Helper()
	_, v := mustJSON[struct {
		Message string `json:"message"`
	}](t, x.VM, "POST", "/api/v1/failover/break", "")
	if !strings.Contains(v.Message, "both appliances") {
		t.Fatalf("%s: break: %s", x.Name, v.Message)
	}
}

// upgrade installs a base package on x and waits for its trial boot to
// commit.
func upgrade(t *testing.T, x *pairlab.Box, pkg, version string) {
	t.Helper()
	if code, body := upload(t, x.VM, "", mustRead(t, pkg)); code != http.StatusAccepted {
		t.Fatalf("%s: install %s: %d %s", x.Name, version, code, body)
	}
	if _, err := x.VM.Expect(`keel: reboot`, ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, x.VM)
	if st := GetStatus(t, x.VM, TestPassword); st.Base.Version != version || !st.Boot.Committed {
		t.Fatalf("%s after installing %s: version %s, committed %v", x.Name, version, st.Base.Version, st.Boot.Committed)
	}
}

// holds reports whether x holds a floating address.
func holds(t *testing.T, x *pairlab.Box, addr string) bool {
	t.Helper()
	_, v := mustJSON[struct {
		Addresses []struct {
			Address string `json:"address"`
			Held    bool   `json:"held"`
		} `json:"addresses"`
	}](t, x.VM, "GET", "/api/v1/network/floating", "")
	for _, a := range v.Addresses {
		if a.Address == addr && a.Held {
			return true
		}
	}
	return false
}

// Automatic failover, case after case on one pair: the primary paused
// (SIGSTOP), its cable pulled, its CPU starved, its power cut; each time
// the backup takes over, and the old primary gives way when it is back.
// With the backup's own cable pulled, the witness is silent too and the
// backup stays backup, saying why.
func TestFailoverAutomaticTakeover(t *testing.T) {
	e := Require(t)
	p := bootPair(t, e.Image)
	a, b := p.a, p.b
	p.establish(a, b, pairlab.AutoSettings)
	waitAnswering(t, p, b)
	probe := nstest.StartProber(t, p.NS.Hub(), pairlab.SharedIP)
	shared := pairlab.SharedIP

	// takeover checks that to becomes primary after lost, that the shared
	// address answers again (from to's MAC), and logs how long it took.
	takeover := func(what string, lost time.Time, to *pairlab.Box) {
		t.Helper()
		p.waitRole(to, "primary", 20*time.Second)
		first, ok := probe.FirstAfter(lost)
		if !ok {
			t.Fatalf("%s: the shared address never answered again", what)
		}
		t.Logf("%s: the shared address answered again %s after the primary was lost", what, first.Sub(lost).Round(time.Millisecond))
		if mac := p.arp(shared); !strings.EqualFold(mac, to.MAC) {
			t.Errorf("%s: the shared address answers from %s, want %s's %s", what, mac, to.Name, to.MAC)
		}
	}
	// givesWay checks that x, back, becomes backup within twice the
	// detection time (and the polls' own delay).
	givesWay := func(what string, x *pairlab.Box, back time.Time) {
		t.Helper()
		p.waitRole(x, "backup", 10*time.Second)
		if took := time.Since(back); took > 2*time.Second+3*time.Second {
			t.Errorf("%s: %s gave way %s after it came back", what, x.Name, took.Round(time.Millisecond))
		}
	}

	// The primary's VM frozen.
	lost := time.Now()
	if err := a.VM.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	takeover("paused", lost, b)
	back := time.Now()
	a.VM.Signal(syscall.SIGCONT)
	givesWay("paused", a, back)
	if st := p.status(a); !strings.Contains(st.LastChange, "split brain") || st.Epoch != p.status(b).Epoch {
		t.Errorf("A after giving way: %q, epoch %d", st.LastChange, st.Epoch)
	}

	// The primary's cable pulled: it stays primary on its own, cut off,
	// and gives way once it hears the new primary again.
	lost = time.Now()
	b.VM.SetLink(false)
	takeover("cable pulled", lost, a)
	if r := role(b); r != "primary" {
		t.Errorf("B, cut off, is %s", r)
	}
	back = time.Now()
	b.VM.SetLink(true)
	givesWay("cable pulled", b, back)

	// The backup's cable pulled: the witness is silent too.
	b.VM.SetLink(false)
	time.Sleep(4 * time.Second)
	st := p.status(b)
	if st.Role != "backup" || !strings.Contains(st.Automatic.Waiting, "cut off") {
		t.Errorf("B with its own cable pulled: %s, waiting %q", st.Role, st.Automatic.Waiting)
	}
	b.VM.SetLink(true)
	waitAnswering(t, p, b)
	if r := role(a); r != "primary" {
		t.Fatalf("A is %s after B's cable came back", r)
	}

	// The primary's CPU starved: it runs 20 ms in every 1.5 s, longer
	// than the detection time (at 20 ms in every 500 it still answers
	// within it, and stays primary).
	lost = time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(8 * time.Second); time.Now().Before(end); {
			a.VM.Signal(syscall.SIGSTOP)
			time.Sleep(1480 * time.Millisecond)
			a.VM.Signal(syscall.SIGCONT)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	takeover("starved", lost, b)
	<-done
	back = time.Now()
	givesWay("starved", a, back)

	// The primary's power cut: it boots as primary, finds the address
	// taken and the other box ahead, and becomes backup.
	lost = time.Now()
	if err := b.VM.PowerCut(); err != nil {
		t.Fatal(err)
	}
	takeover("power cut", lost, a)
	b.VM = Restart(t, b.VM)
	WaitReady(t, b.VM)
	p.waitRole(b, "backup", time.Minute)
	if mac := p.arp(shared); !strings.EqualFold(mac, a.MAC) {
		t.Errorf("after B's reboot the shared address answers from %s, want A's", mac)
	}

	// Syncs still flow from the primary.
	rep := p.syncNow(b)
	if rep.From != a.Serial {
		t.Errorf("B pulled from %s", rep.From)
	}
	// One takeover a case, none more: the establish's epoch 1, then four.
	if sa, sb := p.status(a), p.status(b); sa.Epoch != 5 || sb.Epoch != 5 {
		t.Errorf("epochs %d and %d after four takeovers, want 5: the roles went back and forth", sa.Epoch, sb.Epoch)
	}
}

// waitAnswering waits until x hears its peer's heartbeats.
func waitAnswering(t *testing.T, p *pairLab, x *pairlab.Box) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if st := p.status(x); st.Peer != nil && st.Peer.Answering {
			return
		}
	}
	t.Fatalf("%s does not hear its peer", x.Name)
}

// roleSample is both boxes' roles as one poll saw them; at is when the
// requests were sent (the answers describe a moment after that).
type roleSample struct {
	at     time.Time
	role   [2]string
	epoch  [2]uint64
	answer [2]bool
}

// roleWatch polls both boxes' roles every 100 ms.
type roleWatch struct {
	mu      sync.Mutex
	samples []roleSample
	stop    chan struct{}
	done    sync.WaitGroup
}

func watchRoles(p *pairLab) *roleWatch {
	w := &roleWatch{stop: make(chan struct{})}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		for {
			select {
			case <-w.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			s := roleSample{at: time.Now()}
			var wg sync.WaitGroup
			for i, x := range []*pairlab.Box{p.a, p.b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, body, err := request(x.VM.HTTPSPort(), "GET", "/api/v1/failover", TestPassword, nil, 1500*time.Millisecond)
					var st failover.Status
					if err == nil && code == http.StatusOK && json.Unmarshal(body, &st) == nil {
						s.role[i], s.epoch[i], s.answer[i] = st.Role, st.Epoch, true
					}
				}()
			}
			wg.Wait()
			w.mu.Lock()
			w.samples = append(w.samples, s)
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *roleWatch) close() {
	close(w.stop)
	w.done.Wait()
}

// lastBothPrimary is the last sample sent after from in which both boxes
// said primary.
func (w *roleWatch) lastBothPrimary(from time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var last time.Time
	found := false
	for _, s := range w.samples {
		if s.at.After(from) && s.role[0] == "primary" && s.role[1] == "primary" {
			last, found = s.at, true
		}
	}
	return last, found
}

// settled is the roles in the newest sample in which both boxes answered.
func (w *roleWatch) settled() (roleSample, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := len(w.samples) - 1; i >= 0; i-- {
		if s := w.samples[i]; s.answer[0] && s.answer[1] {
			return s, true
		}
	}
	return roleSample{}, false
}

// Randomized partitions and heals of an automatic pair: a cable pulled,
// the pair's ports isolated from each other (both still reach the
// witness, so both become primary), a box paused; after every heal the
// two primaries settle within twice the detection time, the backup's
// next sync comes from the primary, and the file the primary wrote last
// is what the backup has. KEEL_FAILOVER_ROUNDS sets the count (20 here,
// 100 in make soak), KEEL_SEED the random seed.
func TestFailoverRandomPartitions(t *testing.T) {
	e := Require(t)
	rounds := 20
	if n, err := strconv.Atoi(os.Getenv("KEEL_FAILOVER_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("KEEL_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("%d rounds, seed %d (KEEL_SEED=%d repeats them)", rounds, seed, seed)
	rng := rand.New(rand.NewSource(seed))
	p := bootPair(t, e.Image)
	p.establish(p.a, p.b, pairlab.AutoSettings)
	waitAnswering(t, p, p.b)
	w := watchRoles(p)
	defer w.close()
	const detection = time.Second
	boxes := map[string]*pairlab.Box{p.a.Serial: p.a, p.b.Serial: p.b}

	type fault struct {
		name      string
		cut, heal func()
	}
	faults := []fault{
		{"A's cable pulled", func() { p.a.VM.SetLink(false) }, func() { p.a.VM.SetLink(true) }},
		{"B's cable pulled", func() { p.b.VM.SetLink(false) }, func() { p.b.VM.SetLink(true) }},
		{"A and B cut from each other", func() { p.NS.Isolate(p.a.Tap, true); p.NS.Isolate(p.b.Tap, true) },
			func() { p.NS.Isolate(p.a.Tap, false); p.NS.Isolate(p.b.Tap, false) }},
		{"A paused", func() { p.a.VM.Signal(syscall.SIGSTOP) }, func() { p.a.VM.Signal(syscall.SIGCONT) }},
		{"B paused", func() { p.b.VM.Signal(syscall.SIGSTOP) }, func() { p.b.VM.Signal(syscall.SIGCONT) }},
	}
	var report []string
	for i := 1; i <= rounds; i++ {
		f := faults[rng.Intn(len(faults))]
		d := 300*time.Millisecond + time.Duration(rng.Int63n(int64(2700*time.Millisecond)))
		f.cut()
		time.Sleep(d)
		healed := time.Now()
		f.heal()
		time.Sleep(2*detection + 1500*time.Millisecond)
		if last, ok := w.lastBothPrimary(healed); ok && last.Sub(healed) > 2*detection {
			t.Errorf("round %d (%s for %s): both boxes were primary %s after the heal", i, f.name, d.Round(time.Millisecond), last.Sub(healed).Round(time.Millisecond))
		}
		// One primary, one backup, the same epoch.
		var s roleSample
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			var ok bool
			s, ok = w.settled()
			if ok && s.at.After(healed) && s.role[0] != s.role[1] && s.role[0] != "none" && s.role[1] != "none" && s.epoch[0] == s.epoch[1] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d (%s for %s): the pair did not settle: %+v", i, f.name, d.Round(time.Millisecond), s)
			}
		}
		primary, backup := p.a, p.b
		if s.role[1] == "primary" {
			primary, backup = p.b, p.a
		}
		marker := fmt.Sprintf("round %d by %s", i, primary.Serial)
		appFile(t, primary, "round.txt", marker)
		rep := p.syncNow(backup)
		if boxes[rep.From] != primary || rep.Epoch != s.epoch[0] {
			t.Errorf("round %d: %s pulled from %s at epoch %d; the primary is %s at epoch %d", i, backup.Serial, rep.From, rep.Epoch, primary.Serial, s.epoch[0])
		}
		report = append(report, fmt.Sprintf("%d: %s for %s -> %s primary (epoch %d)", i, f.name, d.Round(time.Millisecond), primary.Name, s.epoch[0]))
		if i == rounds {
			// The data flowed from the primary: the backup, on its own,
			// serves what the primary wrote last.
			breakPair(t, backup)
			appFileIs(t, backup, "round.txt", marker)
		}
	}
	t.Logf("rounds:\n%s", strings.Join(report, "\n"))
}
