package vmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/netcfg/nstest"
	"keel.dev/keel/qemu"
)

// The failover pair's lab: two VMs whose second NICs are taps on a bridge
// in a namespace of the test's (never the host's network), with the
// bridge's own address as the witness and a prober.
const (
	segWitness = "192.168.77.1"
	segShared  = "192.168.77.100/24"
)

type pairBox struct {
	name    string // "A" or "B"
	serial  string
	addr    string // its own address on the segment
	mac     string
	tap     string
	appPort int
	vm      *qemu.VM
}

type pairLab struct {
	t    *testing.T
	lab  *nstest.Lab
	a, b *pairBox
}

// bootPair boots two boxes of img on one segment, gives each its own
// address there and both the same inter-appliance key, and puts the
// shared address on A as a floating address; they are not paired yet.
func bootPair(t *testing.T, img string) *pairLab {
	t.Helper()
	nstest.RequireRoot(t)
	p := &pairLab{t: t, lab: nstest.New(t)}
	p.lab.HubAddress(segWitness + "/24")
	p.a = &pairBox{name: "A", serial: "KEEL-PAIR-A", addr: "192.168.77.11", mac: "52:54:00:77:00:0a", tap: "tapa"}
	p.b = &pairBox{name: "B", serial: "KEEL-PAIR-B", addr: "192.168.77.12", mac: "52:54:00:77:00:0b", tap: "tapb"}
	for _, x := range []*pairBox{p.a, p.b} {
		x.appPort = freePort(t)
		x.vm = Boot(t, qemu.Config{Image: img, Serial: x.serial, Segment: p.lab.Tap(x.tap), SegmentMAC: x.mac,
			HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:8080", x.appPort)}})
	}
	for _, x := range []*pairBox{p.a, p.b} {
		WaitReady(t, x.vm)
		Password(t, x.vm)
		p.segmentAddress(x)
	}
	_, key := mustJSON[struct {
		Key string `json:"key"`
	}](t, p.a.vm, "POST", "/api/v1/peer-key/generate", "")
	mustJSON[map[string]any](t, p.b.vm, "PUT", "/api/v1/peer-key", fmt.Sprintf(`{"key":%q}`, key.Key))
	mustJSON[map[string]any](t, p.a.vm, "POST", "/api/v1/network/floating/enable", fmt.Sprintf(`{"interface":"eth1","address":%q}`, segShared))
	return p
}

// segmentAddress gives eth1 the box's own static address on the segment.
func (p *pairLab) segmentAddress(x *pairBox) {
	t := p.t
	t.Helper()
	_, body := API(t, x.vm, "GET", "/api/v1/network", TestPassword)
	var v struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	var ifs []any
	for _, i := range v.Config["interfaces"].([]any) {
		if i.(map[string]any)["name"] != "eth1" {
			ifs = append(ifs, i)
		}
	}
	v.Config["interfaces"] = append(ifs, map[string]any{"name": "eth1", "enabled": true,
		"addresses": []any{map[string]any{"method": "static", "address": x.addr + "/24", "enabled": true}}})
	b, _ := json.Marshal(v.Config)
	if code, body := APIBody(t, x.vm, "PUT", "/api/v1/network", TestPassword, string(b)); code != http.StatusOK {
		t.Fatalf("%s: give eth1 %s: %d %s", x.name, x.addr, code, body)
	}
}

// establish makes primary the primary of backup.
func (p *pairLab) establish(primary, backup *pairBox, settings string) {
	t := p.t
	t.Helper()
	body := fmt.Sprintf(`{"peer_address":%q,"reverse_address":%q`, backup.addr, primary.addr)
	if settings != "" {
		body += `,"settings":` + settings
	}
	body += "}"
	code, b := APIBody(t, primary.vm, "POST", "/api/v1/failover/establish", TestPassword, body)
	if code != http.StatusOK {
		t.Fatalf("establish on %s: %d %s", primary.name, code, b)
	}
	if st := p.status(backup); st.Role != "backup" {
		t.Fatalf("%s is %s after the establish, want backup", backup.name, st.Role)
	}
}

func (p *pairLab) status(x *pairBox) failover.Status {
	p.t.Helper()
	_, st := mustJSON[failover.Status](p.t, x.vm, "GET", "/api/v1/failover", "")
	return st
}

// role reads a box's role with one short request, "?" when it does not
// answer (paused, cut off from its forward, rebooting).
func (x *pairBox) role() string {
	code, body, err := request(x.vm.HTTPSPort(), "GET", "/api/v1/failover", TestPassword, nil, 2*time.Second)
	var st failover.Status
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &st) != nil {
		return "?"
	}
	return st.Role
}

// waitRole waits until x says it is role.
func (p *pairLab) waitRole(x *pairBox, role string, d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		if last = x.role(); last == role {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.t.Fatalf("%s is %s after %s, want %s", x.name, last, d, role)
}

// syncNow runs Sync Now on the backup and waits for its job.
func (p *pairLab) syncNow(backup *pairBox) failover.SyncReport {
	t := p.t
	t.Helper()
	code, acc := mustJSON[api.Accepted](t, backup.vm, "POST", "/api/v1/failover/sync", "")
	if code != http.StatusAccepted {
		t.Fatalf("sync now: %d", code)
	}
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		_, j := mustJSON[api.Job](t, backup.vm, "GET", "/api/v1/jobs/"+acc.Job, "")
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
func appFile(t *testing.T, x *pairBox, name, content string) {
	t.Helper()
	if code, body := app(t, x.appPort, "PUT", "/files/"+name, content); code/100 != 2 {
		t.Fatalf("%s: PUT /files/%s: %d %s", x.name, name, code, body)
	}
}

func appFileIs(t *testing.T, x *pairBox, name, want string) {
	t.Helper()
	code, body := app(t, x.appPort, "GET", "/files/"+name, "")
	if code != http.StatusOK || strings.TrimSpace(body) != want {
		t.Errorf("%s: GET /files/%s: %d %q, want %q", x.name, name, code, body, want)
	}
}
