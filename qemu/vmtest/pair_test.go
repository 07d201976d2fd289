package vmtest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/netcfg/nstest"
	"keel.dev/keel/qemu"
	"keel.dev/keel/qemu/pairlab"
)

// pairLab is package pairlab's pair with the tests' failures.
type pairLab struct {
	*pairlab.Lab
	t    *testing.T
	a, b *pairlab.Box
}

// doAPI is one API request of a box with the test password, no retry.
func doAPI(x *pairlab.Box, method, path, body string) (int, []byte, error) {
	return request(x.VM.HTTPSPort(), method, path, TestPassword, strings.NewReader(body), time.Minute)
}

// bootPair boots two boxes of img on one segment, each with its own
// address there and both with the same inter-appliance key, the shared
// address on A as a floating address; they are not paired yet.
func bootPair(t *testing.T, img string) *pairLab {
	t.Helper()
	nstest.RequireRoot(t)
	l, err := pairlab.New(t, doAPI)
	if err != nil {
		t.Fatal(err)
	}
	p := &pairLab{Lab: l, t: t, a: l.A, b: l.B}
	for _, x := range []*pairlab.Box{p.a, p.b} {
		x.VM = Boot(t, l.Config(x, qemu.Config{Image: img}))
	}
	for _, x := range []*pairlab.Box{p.a, p.b} {
		WaitReady(t, x.VM)
		Password(t, x.VM)
	}
	if err := l.Prepare(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *pairLab) establish(primary, backup *pairlab.Box, settings string) {
	p.t.Helper()
	if err := p.Establish(primary, backup, settings); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pairLab) status(x *pairlab.Box) failover.Status {
	p.t.Helper()
	st, err := p.Status(x)
	if err != nil {
		p.t.Fatal(err)
	}
	return st
}

func (p *pairLab) arp(addr string) string { return p.ARP(addr) }

// role reads a box's role with one short request, "?" when it does not
// answer (paused, cut off from its forward, rebooting).
func role(x *pairlab.Box) string {
	code, body, err := request(x.VM.HTTPSPort(), "GET", "/api/v1/failover", TestPassword, nil, 2*time.Second)
	var st failover.Status
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &st) != nil {
		return "?"
	}
	return st.Role
}

// waitRole waits until x says it is role.
func (p *pairLab) waitRole(x *pairlab.Box, want string, d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		if last = role(x); last == want {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.t.Fatalf("%s is %s after %s, want %s", x.Name, last, d, want)
}

// syncNow runs Sync Now on the backup and waits for its job.
func (p *pairLab) syncNow(backup *pairlab.Box) failover.SyncReport {
	t := p.t
	t.Helper()
	code, acc := mustJSON[api.Accepted](t, backup.VM, "POST", "/api/v1/failover/sync", "")
	if code != http.StatusAccepted {
		t.Fatalf("sync now: %d", code)
	}
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		_, j := mustJSON[api.Job](t, backup.VM, "GET", "/api/v1/jobs/"+acc.Job, "")
		switch j.State {
		case api.JobDone:
			st := p.status(backup)
			if st.LastSync == nil || !st.LastSync.OK {
				t.Fatalf("the sync's job is done but its report says %+v", st.LastSync)
			}
			return *st.LastSync
		case api.JobFailed:
			t.Fatalf("the sync failed: %s", j.Message)
		}
	}
	t.Fatal("the sync did not end within 3 minutes")
	return failover.SyncReport{}
}

// appFile writes a file into the demo app's file store, through its port.
func appFile(t *testing.T, x *pairlab.Box, name, content string) {
	t.Helper()
	if code, body := app(t, x.AppPort, "PUT", "/files/"+name, content); code/100 != 2 {
		t.Fatalf("%s: PUT /files/%s: %d %s", x.Name, name, code, body)
	}
}

func appFileIs(t *testing.T, x *pairlab.Box, name, want string) {
	t.Helper()
	code, body := app(t, x.AppPort, "GET", "/files/"+name, "")
	if code != http.StatusOK || strings.TrimSpace(body) != want {
		t.Errorf("%s: GET /files/%s: %d %q, want %q", x.Name, name, code, body, want)
	}
}
