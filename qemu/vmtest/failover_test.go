package vmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/apps"
)

// The vendor guide's two ways of upgrading a failover pair, step by step
// on one pair: synchronously to 1.1.0 (back up the primary, sync, break,
// upgrade the primary, then the backup, establish again with the same
// roles), then asynchronously to 1.2.0 (sync, break, upgrade the backup
// first and check it, swing the shared address to it, upgrade the old
// primary, establish again the other way round).
func TestFailoverPairUpgrades(t *testing.T) {
	e := Require(t)
	key := VendorKey(t)
	p := bootPair(t, e.Image)
	a, b := p.a, p.b
	appFile(t, a, "site.txt", "v1")
	p.establish(a, b, "")
	if st := GetStatus(t, b.vm, TestPassword); appState(t, st) != apps.StateHeld {
		t.Errorf("the backup's application is %s, want held", appState(t, st))
	}
	if code, body := APIBody(t, b.vm, "POST", "/api/v1/users", TestPassword, `{"name":"ops","password":"ops-password-1"}`); code != http.StatusConflict || !strings.Contains(string(body), "KEEL-PAIR-A") {
		t.Errorf("a change of a synced setting on the backup: %d %s", code, body)
	}
	if code, body := upload(t, a.vm, "", []byte("not a package")); code != http.StatusConflict || !strings.Contains(string(body), "Break the failover relationship first") {
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
	if !holds(t, a, segShared) {
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
	mustJSON[map[string]any](t, a.vm, "POST", "/api/v1/network/floating/disable", fmt.Sprintf(`{"interface":"eth1","address":%q}`, segShared))
	mustJSON[map[string]any](t, b.vm, "POST", "/api/v1/network/floating/enable", fmt.Sprintf(`{"interface":"eth1","address":%q}`, segShared))
	if mac := p.arp(strings.Split(segShared, "/")[0]); !strings.EqualFold(mac, b.mac) {
		t.Errorf("after the swing the shared address answers from %s, want B's %s", mac, b.mac)
	}
	upgrade(t, a, pkg120, "1.2.0")
	p.establish(b, a, "")
	if st := p.status(b); st.Role != "primary" || len(st.Shared) != 1 || !st.Shared[0].Held {
		t.Errorf("B after the second establish: %+v", st)
	}
	if st := GetStatus(t, a.vm, TestPassword); appState(t, st) != apps.StateHeld {
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

func backupOf(t *testing.T, x *pairBox) {
	t.Helper()
	code, body := call(t, x.vm, "POST", "/api/v1/backup", map[string]string{"Content-Type": "application/json"}, []byte(`{"password":"backup-password-1"}`))
	if code != http.StatusOK || len(body) < 1024 {
		t.Fatalf("%s: backup: %d, %d bytes", x.name, code, len(body))
	}
}

func breakPair(t *testing.T, x *pairBox) {
	t.Helper()
	_, v := mustJSON[struct {
		Message string `json:"message"`
	}](t, x.vm, "POST", "/api/v1/failover/break", "")
	if !strings.Contains(v.Message, "both appliances") {
		t.Fatalf("%s: break: %s", x.name, v.Message)
	}
}

// upgrade installs a base package on x and waits for its trial boot to
// commit.
func upgrade(t *testing.T, x *pairBox, pkg, version string) {
	t.Helper()
	if code, body := upload(t, x.vm, "", mustRead(t, pkg)); code != http.StatusAccepted {
		t.Fatalf("%s: install %s: %d %s", x.name, version, code, body)
	}
	if _, err := x.vm.Expect(`keel: reboot`, ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, x.vm)
	if st := GetStatus(t, x.vm, TestPassword); st.Base.Version != version || !st.Boot.Committed {
		t.Fatalf("%s after installing %s: version %s, committed %v", x.name, version, st.Base.Version, st.Boot.Committed)
	}
}

// holds reports whether x holds a floating address.
func holds(t *testing.T, x *pairBox, addr string) bool {
	t.Helper()
	_, v := mustJSON[struct {
		Addresses []struct {
			Address string `json:"address"`
			Held    bool   `json:"held"`
		} `json:"addresses"`
	}](t, x.vm, "GET", "/api/v1/network/floating", "")
	for _, a := range v.Addresses {
		if a.Address == addr && a.Held {
			return true
		}
	}
	return false
}

var arpReply = regexp.MustCompile(`reply from \S+ \[([0-9A-Fa-f:]+)\]`)

// arp asks the segment who has addr, from the hub: the MAC that answers.
func (p *pairLab) arp(addr string) string {
	p.t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", p.lab.Hub(), "arping", "-c", "2", "-w", "3", "-I", "br0", addr).CombinedOutput()
	m := arpReply.FindStringSubmatch(string(out))
	if m == nil {
		return ""
	}
	return m[1]
}

