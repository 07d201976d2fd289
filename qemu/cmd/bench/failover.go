package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/netcfg/nstest"
	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
	"keel.dev/keel/qemu/pairlab"
)

// The failover figures (issue 15) in a pair of VMs on a segment of a
// namespace (package pairlab; root): the takeover when the primary freezes
// (SIGSTOP) against the detection time, the shared address's outage in a
// planned switchover (Become primary) against the guide's manual swing
// (disable on one box, enable on the other), and the bytes a sync moves
// after 1% of the application's data changed against the data's size. The
// takeover against keepalived is netbench's (namespaces).
const (
	failoverData    = 1 << 30 // the data partition of the pair's image
	failoverBulkMiB = 256     // the application data the sync figures use
	failoverRuns    = 10
)

// benchT lets nstest and pairlab build the segment outside a test.
type benchT struct {
	mu       sync.Mutex
	cleanups []func()
}

func (t *benchT) Helper()                      {}
func (t *benchT) Cleanup(f func())             { t.mu.Lock(); t.cleanups = append(t.cleanups, f); t.mu.Unlock() }
func (t *benchT) Fatal(args ...any)            { panic(benchFatal{fmt.Errorf("%s", fmt.Sprint(args...))}) }
func (t *benchT) Skip(args ...any)             { t.Fatal(args...) }
func (t *benchT) Fatalf(f string, args ...any) { panic(benchFatal{fmt.Errorf(f, args...)}) }
func (t *benchT) done() {
	t.mu.Lock()
	fs := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

type benchFatal struct{ err error }

func (b *bench) failoverFigures() (err error) {
	if os.Geteuid() != 0 {
		say("failover figures skipped: they need root for the pair's network namespace")
		return nil
	}
	t := &benchT{}
	defer t.done()
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(benchFatal)
			if !ok {
				panic(r)
			}
			err = f.err
		}
	}()
	app := filepath.Join(b.work, "demo-failover.squashfs")
	if err := appimage.Demo(app, "1.0.0"); err != nil {
		return err
	}
	sizes := layout.DefaultSizes
	sizes.Data = failoverData
	img := filepath.Join(b.work, "failover.img")
	say("building the failover bench image (1 GiB data partition, demo app)")
	if err := b.buildImage(img, diskimage.Options{Size: layout.MinDiskSize(sizes), Sizes: sizes, GrubTimeout: 1, AppPayload: app}); err != nil {
		return err
	}
	lab, err := pairlab.New(t, func(x *pairlab.Box, method, path, body string) (int, []byte, error) {
		return newBox(x.VM).do(method, path, strings.NewReader(body), time.Minute)
	})
	if err != nil {
		return err
	}
	for _, x := range []*pairlab.Box{lab.A, lab.B} {
		vm, err := b.start(lab.Config(x, qemu.Config{Image: img, WorkDir: filepath.Join(b.work, "failover-"+x.Name)}))
		if err != nil {
			return err
		}
		t.Cleanup(func() { vm.Close() })
		x.VM = vm
	}
	for _, x := range []*pairlab.Box{lab.A, lab.B} {
		if _, err := x.VM.Expect(`keel: ready`, benchTimeout); err != nil {
			return err
		}
	}
	if err := lab.Prepare(); err != nil {
		return err
	}
	if err := lab.Establish(lab.A, lab.B, pairlab.AutoSettings); err != nil {
		return err
	}
	probe := nstest.StartProber(t, lab.NS.Hub(), pairlab.SharedIP)
	p := &pairBench{lab: lab, probe: probe}

	say("takeover: the primary frozen %d times", failoverRuns)
	took, err := p.takeovers(failoverRuns)
	if err != nil {
		return err
	}
	row(fmt.Sprintf("failover: takeover in VMs, p95 (p50 %.0f) (ms)", pct(took, 0.5)), pct(took, 0.95), 1000, "(baseline: the detection time, 1 s)")

	say("planned switchover: become primary %d times, then the guide's manual swing", 4)
	planned, manual, err := p.switchovers(4)
	if err != nil {
		return err
	}
	row("failover: planned switchover, outage max (ms)", pct(planned, 1), pct(manual, 1), "<= 1000 ms (baseline: manual swing)")

	say("sync: %d MiB of application data, then 1%% of it changed", failoverBulkMiB)
	figs, err := p.syncs()
	if err != nil {
		return err
	}
	for _, f := range figs {
		row(f.name, f.value, f.base, f.goal)
	}
	return nil
}

type pairBench struct {
	lab   *pairlab.Lab
	probe *nstest.Prober
}

func pct(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// roles is which box is primary and which backup, once both say so and
// agree on the epoch.
func (p *pairBench) roles(timeout time.Duration) (primary, backup *pairlab.Box, err error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		a, errA := p.lab.Status(p.lab.A)
		b, errB := p.lab.Status(p.lab.B)
		if errA == nil && errB == nil && a.Epoch == b.Epoch && a.Peer != nil && b.Peer != nil && a.Peer.Answering && b.Peer.Answering {
			switch {
			case a.Role == "primary" && b.Role == "backup":
				return p.lab.A, p.lab.B, nil
			case b.Role == "primary" && a.Role == "backup":
				return p.lab.B, p.lab.A, nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil, nil, fmt.Errorf("the pair did not settle within %s", timeout)
}

// takeovers freezes the primary at a random moment and times the first
// answer of the shared address to a ping sent after it; the frozen box
// thaws and gives way before the next run.
func (p *pairBench) takeovers(n int) ([]float64, error) {
	var out []float64
	for i := 0; i < n; i++ {
		primary, _, err := p.roles(time.Minute)
		if err != nil {
			return nil, err
		}
		time.Sleep(time.Second + time.Duration(rand.Int64N(int64(time.Second))))
		if err := primary.VM.Signal(syscall.SIGSTOP); err != nil {
			return nil, err
		}
		lost := time.Now()
		var first time.Time
		ok := nstest.Eventually(20*time.Second, func() bool {
			var got bool
			first, got = p.probe.FirstAfter(lost)
			return got
		})
		primary.VM.Signal(syscall.SIGCONT)
		if !ok {
			return nil, fmt.Errorf("run %d: the shared address did not answer within 20 s of the primary's freeze", i+1)
		}
		out = append(out, float64(first.Sub(lost))/float64(time.Millisecond))
	}
	return out, nil
}

// switchovers times the shared address's outage during Become primary on
// the backup, n times (back and forth), then during the guide's manual
// swing of a broken pair: disable on the box that holds it, enable on the
// other.
func (p *pairBench) switchovers(n int) (planned, manual []float64, err error) {
	outage := func(f func() error) (float64, error) {
		start := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		end := time.Now().Add(time.Second)
		time.Sleep(1500 * time.Millisecond)
		return float64(p.probe.Gap(start, end)) / float64(time.Millisecond), nil
	}
	do := func(x *pairlab.Box, method, path, body string) error {
		code, b, err := newBox(x.VM).do(method, path, strings.NewReader(body), time.Minute)
		if err != nil || code/100 != 2 {
			return fmt.Errorf("%s: %s %s: %d %s %v", x.Name, method, path, code, b, err)
		}
		return nil
	}
	for i := 0; i < n; i++ {
		_, backup, err := p.roles(time.Minute)
		if err != nil {
			return nil, nil, err
		}
		ms, err := outage(func() error { return do(backup, "POST", "/api/v1/failover/become-primary", "{}") })
		if err != nil {
			return nil, nil, err
		}
		planned = append(planned, ms)
	}
	primary, backup, err := p.roles(time.Minute)
	if err != nil {
		return nil, nil, err
	}
	if err := do(primary, "POST", "/api/v1/failover/break", ""); err != nil {
		return nil, nil, err
	}
	for i := 0; i < 2; i++ {
		body := fmt.Sprintf(`{"interface":"eth1","address":%q}`, pairlab.Shared)
		ms, err := outage(func() error {
			if err := do(primary, "POST", "/api/v1/network/floating/disable", body); err != nil {
				return err
			}
			return do(backup, "POST", "/api/v1/network/floating/enable", body)
		})
		if err != nil {
			return nil, nil, err
		}
		manual = append(manual, ms)
		primary, backup = backup, primary
	}
	if err := p.lab.Establish(primary, backup, pairlab.AutoSettings); err != nil {
		return nil, nil, err
	}
	return planned, manual, nil
}

type figure struct {
	name        string
	value, base float64
	goal        string
}

// syncs fills the primary's application with bulk data, syncs it, then
// changes 1% of it in long and in short runs and times and weighs the
// syncs that follow.
func (p *pairBench) syncs() ([]figure, error) {
	primary, backup, err := p.roles(time.Minute)
	if err != nil {
		return nil, err
	}
	appURL := fmt.Sprintf("http://127.0.0.1:%d", primary.AppPort)
	if _, err := appBulk("POST", appURL+"/bulk?mib="+strconv.Itoa(failoverBulkMiB)); err != nil {
		return nil, err
	}
	sync := func() (failover.SyncReport, error) {
		x := newBox(backup.VM)
		code, body, err := x.do("POST", "/api/v1/failover/sync", nil, time.Minute)
		var acc api.Accepted
		if err != nil || code != http.StatusAccepted || json.Unmarshal(body, &acc) != nil {
			return failover.SyncReport{}, fmt.Errorf("sync now: %d %s %v", code, body, err)
		}
		for deadline := time.Now().Add(30 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
			code, body, err := x.do("GET", "/api/v1/jobs/"+acc.Job, nil, time.Minute)
			var j api.Job
			if err != nil || code != http.StatusOK || json.Unmarshal(body, &j) != nil {
				continue
			}
			if j.State == api.JobFailed {
				return failover.SyncReport{}, fmt.Errorf("the sync failed: %s", j.Message)
			}
			if j.State == api.JobDone {
				st, err := p.lab.Status(backup)
				if err != nil || st.LastSync == nil {
					return failover.SyncReport{}, fmt.Errorf("the sync's report: %v", err)
				}
				return *st.LastSync, nil
			}
		}
		return failover.SyncReport{}, fmt.Errorf("the sync did not end within 30 minutes")
	}
	first, err := sync()
	if err != nil {
		return nil, err
	}
	data := float64(failoverBulkMiB)
	figs := []figure{{"failover: first sync, MiB/s", float64(first.Bytes) / (1 << 20) / first.DurationS, 0, fmt.Sprintf("(%d MiB in %.1f s)", failoverBulkMiB, first.DurationS)}}
	for _, run := range []int{256, 4} {
		if _, err := appBulk("POST", fmt.Sprintf("%s/bulk/change?permille=10&run=%d", appURL, run)); err != nil {
			return nil, err
		}
		rep, err := sync()
		if err != nil {
			return nil, err
		}
		figs = append(figs, figure{fmt.Sprintf("failover: sync after 1%% changed in %d KiB runs, on the wire (MiB)", run),
			float64(rep.Bytes) / (1 << 20), data, fmt.Sprintf("<= 5%% of the data (ratio <= 0.05); took %.1f s", rep.DurationS)})
	}
	return figs, nil
}
