package netcfg_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/netcfg/nstest"
)

// confirmLab is a box namespace serving the network API on every address
// and a client namespace on the same segment that calls it.
type confirmLab struct {
	box, client *nstest.Node
	m           *netcfg.Manager
	path        string
	port        string
	hc          *http.Client
}

func newConfirmLab(t *testing.T, initial string, timeout time.Duration) *confirmLab {
	t.Helper()
	nstest.RequireRoot(t)
	lab := nstest.New(t)
	l := &confirmLab{box: lab.Node("box"), client: lab.Node("cli")}
	l.client.Exec("ip", "addr", "add", "10.8.0.9/24", "dev", "eth0")
	l.path = filepath.Join(t.TempDir(), "network.json")
	m, err := netcfg.NewManager(netcfg.ManagerOptions{NS: l.box.NS, Path: l.path, Log: testLog(t), ConfirmTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	l.m = m
	if _, err := m.Apply(mustConfig(t, initial)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var ln net.Listener
	if err := l.box.NS.Do(func() (err error) { ln, err = net.Listen("tcp", ":0"); return err }); err != nil {
		t.Fatal(err)
	}
	_, l.port, _ = net.SplitHostPort(ln.Addr().String())
	mux := http.NewServeMux()
	m.Routes(mux)
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// Every request opens a new connection from inside the client
	// namespace, so each one finds out whether the box is reachable now.
	l.hc = &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := l.client.NS.Do(func() (err error) {
				d := net.Dialer{Timeout: 500 * time.Millisecond}
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	t.Cleanup(l.hc.CloseIdleConnections)
	return l
}

// call sends a request from the client to the box at ip; err is set when
// the box cannot be reached.
func (l *confirmLab) call(method, ip, path, body string) (int, string, error) {
	req, err := http.NewRequest(method, "http://"+net.JoinHostPort(ip, l.port)+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (l *confirmLab) boxAddrs() string {
	out, _ := l.box.Try("ip", "-o", "addr", "show", "dev", "eth0")
	return out
}

const (
	cfgXOnly  = `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.8.0.1/24"}]}]}`
	cfgXAndY  = `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.8.0.1/24"},{"address":"10.8.0.2/24"}]}]}`
	cfgYOnly  = `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.8.0.2/24"}]}]}`
	cfgYAndNS = `{"interfaces":[{"name":"eth0","addresses":[{"address":"10.8.0.2/24"}]}],"dns":{"servers":["10.8.0.53"]}}`
)

// TestUnconfirmedChangeRollsBack: the client reaches the box over X and
// replaces X with Y; it can no longer reach the box to confirm, so after
// the (shortened) timeout X is back and reachable again.
func TestUnconfirmedChangeRollsBack(t *testing.T) {
	const timeout = 2 * time.Second
	l := newConfirmLab(t, cfgXOnly, timeout)
	if code, body, err := l.call("GET", "10.8.0.1", "/api/v1/network", ""); err != nil || code != 200 {
		t.Fatalf("GET over X before the change: %d %s %v", code, body, err)
	}
	start := time.Now()
	code, body, err := l.call("PUT", "10.8.0.1", "/api/v1/network", cfgYOnly)
	token := tokenOf(t, code, body, err)
	// The answer goes out before the change is applied.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out := l.boxAddrs()
		if !strings.Contains(out, "10.8.0.1/") && strings.Contains(out, "10.8.0.2/24") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the change was not applied 5 s after its answer:\n%s", out)
		}
	}
	if code, body, err := l.call("POST", "10.8.0.1", "/api/v1/network/confirm", `{"token":"`+token+`"}`); err == nil {
		t.Fatalf("the cut-off client could confirm over X: %d %s", code, body)
	}
	if st := l.m.Status(); st.Pending == nil || st.Pending.RollbackAt.Sub(start) > timeout+time.Second {
		t.Fatalf("status while waiting: %+v", st.Pending)
	}
	if !nstest.Eventually(timeout+3*time.Second, func() bool { return strings.Contains(l.boxAddrs(), "10.8.0.1/24") }) {
		t.Fatalf("X did not come back:\n%s", l.boxAddrs())
	}
	t.Logf("X came back %v after the PUT (timeout %v)", time.Since(start).Round(10*time.Millisecond), timeout)
	if time.Since(start) < timeout-100*time.Millisecond {
		t.Fatal("rolled back before the timeout")
	}
	if out := l.boxAddrs(); strings.Contains(out, "10.8.0.2/") {
		t.Errorf("Y still there after the rollback:\n%s", out)
	}
	var code2 int
	if !nstest.Eventually(3*time.Second, func() bool {
		code2, body, err = l.call("GET", "10.8.0.1", "/api/v1/network", "")
		return err == nil
	}) || code2 != 200 || !strings.Contains(body, `"rolled_back_at"`) || strings.Contains(body, `"pending"`) {
		t.Fatalf("GET over X after the rollback: %d %s %v", code2, body, err)
	}
	// The kernel is reconciled before the manager records the
	// configuration in force, so that may lag a moment behind.
	if !nstest.Eventually(time.Second, func() bool {
		got := l.m.Config()
		return len(got.Interfaces[0].Addresses) == 1 && got.Interfaces[0].Addresses[0].Address == "10.8.0.1/24"
	}) {
		t.Errorf("configuration in force after the rollback: %+v", l.m.Config())
	}
	saved, _ := os.ReadFile(l.path)
	if !strings.Contains(string(saved), "10.8.0.1/24") || strings.Contains(string(saved), "10.8.0.2/24") {
		t.Errorf("saved configuration after the rollback:\n%s", saved)
	}
	if code, body, err := l.call("POST", "10.8.0.1", "/api/v1/network/confirm", `{"token":"`+token+`"}`); err != nil || code != http.StatusConflict || !strings.Contains(body, "rolled back at") {
		t.Errorf("confirm after the rollback: %d %s %v", code, body, err)
	}
}

// tokenOf is the confirm token of a 202 answer to a PUT; a client that
// the change cuts off still gets it, since the answer goes out first.
func tokenOf(t *testing.T, code int, body string, err error) string {
	t.Helper()
	var r struct {
		Token string `json:"confirm_token"`
	}
	if err != nil || code != http.StatusAccepted || json.Unmarshal([]byte(body), &r) != nil || len(r.Token) != 32 {
		t.Fatalf("PUT that removes the client's address: %d %s %v; want 202 with a token", code, body, err)
	}
	return r.Token
}

// TestCutOffClientConfirmsFromNewAddress is how an operator moves a box
// to a new address: the PUT over the old address X answers with a token
// before X goes, and the client confirms over the new address Y.
func TestCutOffClientConfirmsFromNewAddress(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	l := newConfirmLab(t, cfgXOnly, timeout)
	code, body, err := l.call("PUT", "10.8.0.1", "/api/v1/network", cfgYOnly)
	token := tokenOf(t, code, body, err)
	// The answer goes out before the change is applied: X goes a moment
	// after it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, _, err := l.call("GET", "10.8.0.1", "/api/v1/network", ""); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the box still answers over X 5 s after the change")
		}
	}
	if code, body, err := l.call("POST", "10.8.0.2", "/api/v1/network/confirm", `{"token":"`+token+`"}`); err != nil || code != 200 {
		t.Fatalf("confirm over Y: %d %s %v", code, body, err)
	}
	time.Sleep(timeout + 500*time.Millisecond)
	if out := l.boxAddrs(); strings.Contains(out, "10.8.0.1/") || !strings.Contains(out, "10.8.0.2/24") {
		t.Errorf("after the timeout the confirmed change is gone:\n%s", out)
	}
	if saved, _ := os.ReadFile(l.path); !strings.Contains(string(saved), "10.8.0.2/24") || strings.Contains(string(saved), "10.8.0.1/24") {
		t.Errorf("saved configuration:\n%s", saved)
	}
}

// TestConfirmedChangeStays: the client reaches the box over Y, removes X,
// confirms over Y, and the change outlives the timeout. Changes that
// cannot cut the client off need no confirmation.
func TestConfirmedChangeStays(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	l := newConfirmLab(t, cfgXAndY, timeout)
	code, body, err := l.call("PUT", "10.8.0.2", "/api/v1/network", cfgYOnly)
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("PUT touching the client's link: %d %s %v; want 202", code, body, err)
	}
	var r struct {
		Token      string    `json:"confirm_token"`
		RollbackAt time.Time `json:"rollback_at"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.Token) != 32 || time.Until(r.RollbackAt) > timeout {
		t.Fatalf("202 body: %s (%v)", body, err)
	}
	saved, _ := os.ReadFile(l.path)
	if strings.Contains(string(saved), "10.8.0.2/24\"\n") || !strings.Contains(string(saved), "10.8.0.1/24") {
		t.Errorf("the unconfirmed change was saved:\n%s", saved)
	}
	if code, body, err := l.call("POST", "10.8.0.2", "/api/v1/network/confirm", `{"token":"0123"}`); err != nil || code != http.StatusForbidden {
		t.Errorf("confirm with a wrong token: %d %s %v", code, body, err)
	}
	if code, body, err := l.call("POST", "10.8.0.2", "/api/v1/network/confirm", `{"token":"`+r.Token+`"}`); err != nil || code != 200 {
		t.Fatalf("confirm: %d %s %v", code, body, err)
	}
	time.Sleep(timeout + 500*time.Millisecond)
	if out := l.boxAddrs(); strings.Contains(out, "10.8.0.1/") || !strings.Contains(out, "10.8.0.2/24") {
		t.Fatalf("a confirmed change was rolled back:\n%s", out)
	}
	saved, _ = os.ReadFile(l.path)
	if strings.Contains(string(saved), "10.8.0.1/24") || !strings.Contains(string(saved), "10.8.0.2/24") {
		t.Errorf("the confirmed change was not saved:\n%s", saved)
	}
	if code, body, err := l.call("POST", "10.8.0.2", "/api/v1/network/confirm", `{"token":"`+r.Token+`"}`); err != nil || code != http.StatusConflict {
		t.Errorf("second confirm: %d %s %v", code, body, err)
	}
	// Only DNS changes: the client's link and the routing stay, so no
	// confirmation is asked for.
	if code, body, err := l.call("PUT", "10.8.0.2", "/api/v1/network", cfgYAndNS); err != nil || code != 200 || strings.Contains(body, "confirm_token") {
		t.Errorf("DNS-only PUT: %d %s %v; want 200 without a token", code, body, err)
	}
	if st := l.m.Status(); st.Pending != nil || st.RolledBackAt != nil {
		t.Errorf("status: pending %+v, rolled back %v", st.Pending, st.RolledBackAt)
	}
}

// A configuration a restore put in place (applied as the box came up)
// waits for its confirmation like a client's change: unconfirmed, the one
// from before the restore comes back and is saved; confirmed, it stays.
func TestRestoredConfigurationWaitsForConfirmation(t *testing.T) {
	const timeout = time.Second
	l := newConfirmLab(t, cfgYOnly, timeout)
	ended := make(chan bool, 1)
	l.m.AwaitConfirmation(mustConfig(t, cfgXOnly), "restore-token", timeout, func(ok bool) { ended <- ok })
	if st := l.m.Status(); st.Pending == nil {
		t.Fatal("no confirmation awaited")
	}
	select {
	case ok := <-ended:
		if ok {
			t.Fatal("reported confirmed")
		}
	case <-time.After(timeout + 5*time.Second):
		t.Fatal("the wait did not end")
	}
	if !nstest.Eventually(3*time.Second, func() bool { return strings.Contains(l.boxAddrs(), "10.8.0.1/24") }) {
		t.Fatalf("the configuration from before the restore did not come back:\n%s", l.boxAddrs())
	}
	// The rollback is saved after it is applied: wait for the file too.
	saved := func() bool { b, _ := os.ReadFile(l.path); return strings.Contains(string(b), "10.8.0.1/24") }
	if !nstest.Eventually(3*time.Second, saved) {
		b, _ := os.ReadFile(l.path)
		t.Fatalf("the rollback was not saved: %s", b)
	}

	l.m.AwaitConfirmation(mustConfig(t, cfgYOnly), "second", time.Minute, func(ok bool) { ended <- ok })
	if err := l.m.Confirm("wrong"); err == nil {
		t.Fatal("a wrong token confirmed")
	}
	if err := l.m.Confirm("second"); err != nil {
		t.Fatal(err)
	}
	if ok := <-ended; !ok {
		t.Fatal("reported rolled back")
	}
}

// The console's changes wait for confirmation whatever they change: a
// DNS-only change, which a client's PUT applies at once, rolls back
// unconfirmed.
func TestGuardedChangeAlwaysWaits(t *testing.T) {
	const timeout = time.Second
	l := newConfirmLab(t, cfgYOnly, timeout)
	_, p, err := l.m.ApplyGuarded(mustConfig(t, cfgYAndNS), nil)
	if err != nil || p == nil || p.Token == "" {
		t.Fatalf("pending %+v, err %v", p, err)
	}
	if b, _ := os.ReadFile(l.path); strings.Contains(string(b), "10.8.0.53") {
		t.Fatalf("the unconfirmed change was saved: %s", b)
	}
	if !nstest.Eventually(timeout+5*time.Second, func() bool { return l.m.Status().RolledBackAt != nil }) {
		t.Fatal("the unconfirmed change was not rolled back")
	}
	_, p, err = l.m.ApplyGuarded(mustConfig(t, cfgYAndNS), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.m.Confirm(p.Token); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(l.path); !strings.Contains(string(b), "10.8.0.53") {
		t.Fatalf("the confirmed change was not saved: %s", b)
	}
}
