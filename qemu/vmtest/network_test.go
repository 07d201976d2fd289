package vmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/qemu"
)

// A network change that cuts off the client that made it (the box moves
// to an address QEMU's port forward does not reach) is rolled back when
// the client does not confirm it: the box answers again on its old
// address with its old configuration.
func TestNetworkChangeThatCutsOffClientRollsBack(t *testing.T) {
	e := Require(t)
	t.Parallel() // mostly waiting for the rollback
	vm := Boot(t, qemu.Config{Image: e.Image})
	WaitReady(t, vm)
	pw := Password(vm)
	code, before := API(t, vm, "GET", "/api/v1/network", pw)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/network: %d %s", code, before)
	}
	cut := `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.2.99/24"}]}]}`
	code, body := APIBody(t, vm, "PUT", "/api/v1/network", pw, cut)
	var pending struct {
		Token      string    `json:"confirm_token"`
		RollbackAt time.Time `json:"rollback_at"`
	}
	if err := json.Unmarshal(body, &pending); code != http.StatusAccepted || err != nil || pending.Token == "" {
		t.Fatalf("PUT a configuration that moves the box off 10.0.2.15: %d %s; want 202 with a confirm token", code, body)
	}
	start := time.Now()
	if reachable(vm, pw) {
		t.Fatal("the box still answers on 10.0.2.15 after moving to 10.0.2.99")
	}
	if _, err := vm.Expect(`not confirmed in time`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	var back bool
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline) && !back; time.Sleep(time.Second) {
		back = reachable(vm, pw)
	}
	if !back {
		t.Fatal("the box did not answer again after the rollback")
	}
	t.Logf("the box answered again %v after the unconfirmed change", time.Since(start).Round(time.Second))
	if code, after := API(t, vm, "GET", "/api/v1/network", pw); code != http.StatusOK || !sameJSONField(t, before, after, "config") {
		t.Errorf("after the rollback the configuration is\n%s\nwant\n%s", after, before)
	}
	PowerOff(t, vm)
}

// reachable makes one short request to the box, without the retries of API.
func reachable(vm *qemu.VM, pw string) bool {
	req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/api/v1/status", vm.HTTPSPort()), nil)
	req.SetBasicAuth("admin", pw)
	c := Client()
	c.Timeout = 5 * time.Second
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// sameJSONField compares one top-level field of two JSON objects (the whole
// objects when the field is absent from both).
func sameJSONField(t *testing.T, a, b []byte, field string) bool {
	t.Helper()
	var ma, mb map[string]json.RawMessage
	if json.Unmarshal(a, &ma) != nil || json.Unmarshal(b, &mb) != nil {
		return false
	}
	fa, oka := ma[field]
	fb, okb := mb[field]
	if !oka && !okb {
		return strings.TrimSpace(string(a)) == strings.TrimSpace(string(b))
	}
	return string(fa) == string(fb)
}
