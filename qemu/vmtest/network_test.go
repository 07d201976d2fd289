package vmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/qemu"
)

// A network change that cuts off the client that made it (the box moves
// from 10.0.2.15, where the HTTPS forward leads, to 10.0.2.99) is rolled
// back when the client does not confirm it: the box answers again on its
// old address with its old configuration. Then the operator's way to move
// a box: the same change, confirmed over a second forward that leads to
// the new address with the token the first answer carried.
func TestNetworkChangeThatCutsOffClientRollsBack(t *testing.T) {
	e := Require(t)
	t.Parallel() // mostly waiting for the rollback
	newPort := freeTCPPort(t)
	vm := Boot(t, qemu.Config{Image: e.Image, HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-10.0.2.99:443", newPort)}})
	WaitReady(t, vm)
	pw := Password(t, vm)
	code, before := API(t, vm, "GET", "/api/v1/network", pw)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/network: %d %s", code, before)
	}
	cut := `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.0.2.99/24"}]}]}`
	code, body := APIBody(t, vm, "PUT", "/api/v1/network", pw, cut)
	var pending struct {
		Token string `json:"confirm_token"`
	}
	if err := json.Unmarshal(body, &pending); code != http.StatusAccepted || err != nil || pending.Token == "" {
		t.Fatalf("PUT a configuration that moves the box off 10.0.2.15: %d %s; want 202 with a confirm token", code, body)
	}
	start := time.Now()
	// The answer goes out before the change is made, so give it a moment.
	var gone bool
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !gone; time.Sleep(200 * time.Millisecond) {
		gone = !reachable(vm, pw)
	}
	if !gone {
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

	// Again, and this time confirm over the new address.
	code, body = APIBody(t, vm, "PUT", "/api/v1/network", pw, cut)
	if err := json.Unmarshal(body, &pending); code != http.StatusAccepted || err != nil || pending.Token == "" {
		t.Fatalf("second PUT: %d %s", code, body)
	}
	confirm := fmt.Sprintf(`{"token":%q}`, pending.Token)
	var confirmed bool
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !confirmed; time.Sleep(500 * time.Millisecond) {
		code, body, err := request(newPort, "POST", "/api/v1/network/confirm", pw, strings.NewReader(confirm), 5*time.Second)
		confirmed = err == nil && code == http.StatusOK
		if err == nil && code != http.StatusOK {
			t.Fatalf("confirm over 10.0.2.99: %d %s", code, body)
		}
	}
	if !confirmed {
		t.Fatal("could not confirm over 10.0.2.99")
	}
	code, body, err := request(newPort, "GET", "/api/v1/network", pw, nil, 5*time.Second)
	if err != nil || code != http.StatusOK || strings.Contains(string(body), `"pending"`) || !strings.Contains(string(body), "10.0.2.99/24") {
		t.Errorf("after the confirmation, over 10.0.2.99: %d %s %v", code, body, err)
	}
	PowerOff(t, vm)
}

// request makes one request to the box through the host port port, with
// the admin password pw and no retry, and gives up after timeout. It
// reports errors rather than failing the test, so goroutines may use it.
// A body of bytes.Reader or strings.Reader goes with its length.
func request(port int, method, path, pw string, body io.Reader, timeout time.Duration) (int, []byte, error) {
	req, err := http.NewRequest(method, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), body)
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth("admin", pw)
	c := Client()
	c.Timeout = timeout
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// reachable makes one short request to the box, without the retries of API.
func reachable(vm *qemu.VM, pw string) bool {
	code, _, err := request(vm.HTTPSPort(), "GET", "/api/v1/status", pw, nil, 5*time.Second)
	return err == nil && code == http.StatusOK
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
