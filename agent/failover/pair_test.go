package failover

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"keel.dev/keel/agent/identity"
	"keel.dev/keel/agent/install"
)

// fakeApp is the application runtime: a data folder and a hold.
type fakeApp struct {
	mu       sync.Mutex
	dir      string
	held     string
	releases int
}

func (a *fakeApp) Hold(r string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.held = r
	return nil
}

func (a *fakeApp) Release() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.held != "" {
		a.releases++
	}
	a.held = ""
	return nil
}

func (a *fakeApp) DataDir() (string, error) { return a.dir, nil }

func (a *fakeApp) isHeld() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held != ""
}

// fakeFloat holds addresses in a map; Probe answers owner.
type fakeFloat struct {
	mu    sync.Mutex
	held  map[string]bool
	owner net.HardwareAddr
	taken []time.Time
}

func (f *fakeFloat) Link(hint string, p netip.Prefix) (string, error) { return "eth1", nil }
func (f *fakeFloat) Probe(string, netip.Prefix) (net.HardwareAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owner, nil
}
func (f *fakeFloat) Take(_ string, p netip.Prefix, _ bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.held[p.String()] = true
	f.taken = append(f.taken, time.Now())
	return nil
}
func (f *fakeFloat) Release(_ string, p netip.Prefix) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.held, p.String())
	return nil
}
func (f *fakeFloat) Announce(string, netip.Prefix) error { return nil }
func (f *fakeFloat) holds(p string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held[p]
}

type fakeNetwork struct {
	mu  sync.Mutex
	cfg string
}

func (n *fakeNetwork) Synced() (json.RawMessage, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return []byte(n.cfg), nil
}

func (n *fakeNetwork) ApplySynced(b json.RawMessage) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cfg = string(b)
	return nil
}

// box is one appliance of a test pair, on its own loopback address.
type box struct {
	t        *testing.T
	name     string
	addr     string
	port     int
	dir      string
	key      string
	versions Versions
	skew     time.Duration
	witness  error
	app      *fakeApp
	float    *fakeFloat
	net      *fakeNetwork
	reloads  map[string]int
	s        *Service
	mux      *http.ServeMux
	srv      *http.Server
	cancel   context.CancelFunc
	done     chan struct{}
}

const testKey = "the-pair-key-0123456789abcdefghij"

// hbPort is the heartbeat port of every test box: they listen on
// addresses of their own.
var hbPort = 20000 + os.Getpid()%20000

func newBox(t *testing.T, name, addr string) *box {
	t.Helper()
	dir := t.TempDir()
	b := &box{t: t, name: name, addr: addr, dir: dir, key: testKey, versions: Versions{Base: "1.0.0", App: "demo 1.0.0"},
		app: &fakeApp{dir: filepath.Join(dir, "app")}, float: &fakeFloat{held: map[string]bool{}},
		net: &fakeNetwork{cfg: `{"dns":{"servers":["192.0.2.53"]}}`}, reloads: map[string]int{}}
	os.MkdirAll(b.app.dir, 0o755)
	os.MkdirAll(filepath.Join(dir, "conf"), 0o700)
	id, err := identity.LoadOrCreate(filepath.Join(dir, "identity"), name, []string{"keel"}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Skipf("no loopback address %s: %v", addr, err)
	}
	b.port = ln.Addr().(*net.TCPAddr).Port
	b.start(id.TLS)
	b.mux = http.NewServeMux()
	b.s.Routes(b.mux, b.mux.Handle, func(a SharedAddress) bool { return b.float.holds(a.Address) }, nil)
	b.srv = &http.Server{Handler: b.mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{id.TLS}, GetConfigForClient: PeerTLS(id.TLS, nil)}}
	go b.srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { b.srv.Close() })
	b.run()
	t.Cleanup(b.stop)
	return b
}

// start makes the box's Service (again, after a "restart") and opens it.
func (b *box) start(cert tls.Certificate) {
	b.t.Helper()
	sec := func(name string) Section {
		return Section{Name: name, Path: filepath.Join(b.dir, "conf", name+".json"), Reload: func() error { b.reloads[name]++; return nil }}
	}
	b.s = &Service{
		Dir: filepath.Join(b.dir, "failover"), Serial: b.name, Cert: cert,
		Key:      func() string { return b.key },
		Versions: func() Versions { return b.versions },
		Now:      func() time.Time { return time.Now().Add(b.skew) },
		Floating: b.float, App: b.app, Network: b.net,
		Sections:      []Section{sec("users"), sec("access")},
		Jobs:          install.NewJobs(10),
		HeartbeatPort: hbPort, HeartbeatAddr: netip.MustParseAddr(b.addr),
		Echo:      func(context.Context, netip.Addr, time.Duration) error { return b.witness },
		Gateway:   func() (netip.Addr, error) { return netip.MustParseAddr("192.0.2.1"), nil },
		BootGrace: 500 * time.Millisecond,
	}
	if err := b.s.Open(); err != nil {
		b.t.Fatal(err)
	}
}

func (b *box) run() {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan struct{})
	go func() { b.s.Run(ctx); close(b.done) }()
}

func (b *box) stop() {
	if b.cancel != nil {
		b.cancel()
		<-b.done
		b.cancel = nil
	}
}

func (b *box) write(rel string, data []byte) {
	b.t.Helper()
	p := filepath.Join(b.app.dir, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *box) conf(name, content string) {
	os.WriteFile(filepath.Join(b.dir, "conf", name+".json"), []byte(content), 0o600)
}

func (b *box) readConf(name string) string {
	c, _ := os.ReadFile(filepath.Join(b.dir, "conf", name+".json"))
	return string(c)
}

func establish(t *testing.T, a, b *box, set *Settings) {
	t.Helper()
	req := EstablishRequest{PeerAddress: b.addr, PeerPort: b.port, ReverseAddress: a.addr, ReversePort: a.port,
		Shared: []SharedAddress{{Interface: "eth1", Address: "192.0.2.100/24"}}, Settings: set}
	if _, err := a.s.Establish(context.Background(), req, nil); err != nil {
		t.Fatalf("establish: %v", err)
	}
}

func (b *box) sync() SyncReport {
	b.t.Helper()
	rep, err := b.s.pull(context.Background(), nil)
	if err != nil {
		b.t.Fatalf("sync on %s: %v", b.name, err)
	}
	return rep
}

// tree lists a folder as "path mode size content-digest" lines.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		if rel == syncDir {
			return filepath.SkipDir
		}
		l := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode().IsRegular():
			c, _ := os.ReadFile(p)
			l += fmt.Sprintf(" %d %x %d", len(c), blockHash(c), fi.ModTime().UnixNano())
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			l += " -> " + target
		}
		lines = append(lines, l)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func pair(t *testing.T) (*box, *box) {
	a := newBox(t, "KEEL-A", "127.0.0.1")
	b := newBox(t, "KEEL-B", "127.0.0.2")
	return a, b
}

func TestEstablishSyncSwitchAndBreak(t *testing.T) {
	a, b := pair(t)
	a.conf("users", `{"admin":"A"}`)
	b.conf("users", `{"admin":"B"}`)
	a.write("history/one.rec", random(300<<10))
	a.write("files/note.txt", []byte("hello"))
	os.Symlink("files/note.txt", filepath.Join(a.app.dir, "latest"))
	b.write("stale.tmp", []byte("only on the backup"))

	establish(t, a, b, nil)
	if a.s.Role() != RolePrimary || b.s.Role() != RoleBackup {
		t.Fatalf("roles %s/%s", a.s.Role(), b.s.Role())
	}
	if !b.app.isHeld() || a.app.isHeld() {
		t.Error("the backup's application is not held, or the primary's is")
	}
	if !a.float.holds("192.0.2.100/24") || b.float.holds("192.0.2.100/24") {
		t.Error("the shared address is not on the primary alone")
	}

	rep := b.sync()
	if got, want := tree(t, b.app.dir), tree(t, a.app.dir); got != want {
		t.Fatalf("after the first sync the backup's data differs:\n%s\nwant\n%s", got, want)
	}
	if b.readConf("users") != `{"admin":"A"}` || b.reloads["users"] != 1 {
		t.Errorf("the users were not taken from the primary: %q, %d reloads", b.readConf("users"), b.reloads["users"])
	}
	if b.net.cfg != a.net.cfg {
		t.Errorf("the DNS and NTP servers were not taken: %s", b.net.cfg)
	}
	if !rep.OK || rep.Bytes < 300<<10 {
		t.Errorf("first sync report %+v", rep)
	}

	// A change of one block of 300 KiB moves one block; a rename moves
	// none.
	f, _ := os.OpenFile(filepath.Join(a.app.dir, "history/one.rec"), os.O_WRONLY, 0)
	f.WriteAt([]byte("changed"), 100<<10)
	f.Close()
	os.Rename(filepath.Join(a.app.dir, "files/note.txt"), filepath.Join(a.app.dir, "files/renamed.txt"))
	rep = b.sync()
	if got, want := tree(t, b.app.dir), tree(t, a.app.dir); got != want {
		t.Fatalf("after the second sync the backup's data differs:\n%s\nwant\n%s", got, want)
	}
	if rep.DataBytes != blockSize {
		t.Errorf("the second sync moved %d bytes of data, want one block (%d)", rep.DataBytes, blockSize)
	}
	if rep.Bytes > 8*blockSize {
		t.Errorf("the second sync moved %d bytes on the wire", rep.Bytes)
	}
	if rep = b.sync(); rep.DataBytes != 0 || !strings.Contains(rep.Result, "0 changes") {
		t.Errorf("a sync with nothing changed: %+v", rep)
	}

	// Become primary with a final sync: A answers, so it gives way first.
	a.write("late.rec", []byte("written just before the switch"))
	st, msg, err := b.s.BecomePrimary(context.Background(), BecomePrimaryRequest{FinalSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != RolePrimary || a.s.Role() != RoleBackup || !strings.Contains(msg, "became backup") {
		t.Fatalf("after become-primary: %s/%s, %q", a.s.Role(), st.Role, msg)
	}
	if _, err := os.Stat(filepath.Join(b.app.dir, "late.rec")); err != nil {
		t.Error("the final sync did not bring the last file")
	}
	if !b.float.holds("192.0.2.100/24") || a.float.holds("192.0.2.100/24") || !a.app.isHeld() {
		t.Error("the shared address did not move with the role, or the old primary runs its application")
	}
	// The new primary starts its application in the background.
	eventually(t, "the application starts on the new primary", time.Second, func() bool { return !b.app.isHeld() })
	if a.s.State().Epoch != b.s.State().Epoch {
		t.Errorf("epochs %d/%d", a.s.State().Epoch, b.s.State().Epoch)
	}

	msg, err = b.s.Break(context.Background())
	if err != nil || !strings.Contains(msg, "both appliances") {
		t.Fatalf("break: %q %v", msg, err)
	}
	if a.s.State().In() || b.s.State().In() || a.app.isHeld() {
		t.Error("the relationship or the hold outlived the break")
	}
	if !b.float.holds("192.0.2.100/24") {
		t.Error("the primary gave up the shared address at the break")
	}
	if b.readConf("users") != `{"admin":"A"}` {
		t.Error("the break lost a setting")
	}
}

func TestEstablishRefusals(t *testing.T) {
	a, b := pair(t)
	req := EstablishRequest{PeerAddress: b.addr, PeerPort: b.port, ReverseAddress: a.addr, ReversePort: a.port}
	try := func() string {
		_, err := a.s.Establish(context.Background(), req, nil)
		if err == nil {
			t.Fatal("established")
		}
		if a.s.State().In() {
			t.Fatal("a refused establish left a relationship behind")
		}
		return err.Error()
	}
	b.key = "another-key-0123456789abcdefghijk"
	if msg := try(); !strings.Contains(msg, "inter-appliance keys differ") {
		t.Errorf("keys differ: %s", msg)
	}
	b.key = testKey
	b.versions.App = "demo 1.1.0"
	if msg := try(); !strings.Contains(msg, "demo 1.1.0") || !strings.Contains(msg, "same installed packages") {
		t.Errorf("versions differ: %s", msg)
	}
	b.versions.App = "demo 1.0.0"
	b.skew = 45 * time.Second
	if msg := try(); !strings.Contains(msg, "clocks") || !strings.Contains(msg, "differ by 45s") {
		t.Errorf("clocks differ: %s", msg)
	}
	b.skew = 0
	req.ReverseAddress = "127.0.0.3" // nothing listens there
	if msg := try(); !strings.Contains(msg, "cannot reach KEEL-A back") {
		t.Errorf("reverse path: %s", msg)
	}
	req.ReverseAddress = a.addr
	c := newBox(t, "KEEL-C", "127.0.0.4")
	establish(t, c, b, nil)
	if msg := try(); !strings.Contains(msg, "already the backup of KEEL-C") {
		t.Errorf("already related: %s", msg)
	}
}

// cutConn ends a connection after a number of bytes read.
type cutConn struct {
	net.Conn
	left int
}

func (c *cutConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		c.Conn.Close()
		return 0, errors.New("cut")
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= n
	return n, err
}

func TestSyncCutHalfwayKeepsThePreviousState(t *testing.T) {
	a, b := pair(t)
	a.write("big.rec", random(1<<20))
	a.conf("users", `{"v":1}`)
	establish(t, a, b, nil)
	b.sync()
	before := tree(t, b.app.dir)
	a.write("big.rec", random(1<<20))
	a.write("new.rec", random(64<<10))
	a.conf("users", `{"v":2}`)
	var d net.Dialer
	b.s.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &cutConn{Conn: c, left: 200 << 10}, nil
	}
	if _, err := b.s.pull(context.Background(), nil); err == nil {
		t.Fatal("a cut sync succeeded")
	}
	if got := tree(t, b.app.dir); got != before {
		t.Errorf("a cut sync changed the data:\n%s\nwas\n%s", got, before)
	}
	if b.readConf("users") != `{"v":1}` {
		t.Errorf("a cut sync changed the configuration: %s", b.readConf("users"))
	}
	if st := b.s.State(); st.LastSync.OK || st.LastOK == nil || !strings.Contains(st.LastSync.Result, "failed") {
		t.Errorf("status after a cut sync: %+v", st.LastSync)
	}
	if ents, _ := os.ReadDir(appStage(b.app.dir)); len(ents) > 0 {
		t.Errorf("a cut sync left %d staged files", len(ents))
	}
	b.s.Dial = nil
	b.sync()
	if got, want := tree(t, b.app.dir), tree(t, a.app.dir); got != want {
		t.Errorf("the next sync did not catch up")
	}
}

func TestCommittedSyncFinishesAfterAPowerCut(t *testing.T) {
	a, b := pair(t)
	a.write("one.rec", random(100<<10))
	establish(t, a, b, nil)
	b.sync()
	a.write("one.rec", random(100<<10))
	a.write("dir/two.rec", random(10<<10))
	a.conf("access", `{"default":"accept"}`)
	b.s.crashAfterCommit = true
	b.s.pull(context.Background(), nil)
	if tree(t, b.app.dir) == tree(t, a.app.dir) {
		t.Fatal("the crash hook did not stop the sync before it applied")
	}
	// The restart: a new Service on the same folders finishes it.
	b.stop()
	b.start(b.s.Cert)
	b.run()
	if got, want := tree(t, b.app.dir), tree(t, a.app.dir); got != want {
		t.Errorf("after the restart the sync is not finished:\n%s\nwant\n%s", got, want)
	}
	if b.readConf("access") != `{"default":"accept"}` || b.reloads["access"] == 0 {
		t.Error("the configuration of the interrupted sync was not put in place and reloaded")
	}
}

func fast() *Settings {
	s := DefaultSettings()
	s.Automatic = true
	s.HeartbeatInterval = Duration(50 * time.Millisecond)
	s.DetectionTime = Duration(300 * time.Millisecond)
	return &s
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAutomaticTakeoverThenSplitBrainKeepsTheLosersData(t *testing.T) {
	a, b := pair(t)
	a.write("shared.rec", []byte("both"))
	establish(t, a, b, fast())
	b.sync()
	eventually(t, "the backup hears the primary", 2*time.Second, func() bool { return b.s.Status(nil).Peer.Answering })

	// The primary's heartbeats stop (its agent hangs; the fake address
	// is not probed as owned): the backup takes over.
	a.stop()
	lost := time.Now()
	eventually(t, "takeover", 3*time.Second, func() bool { return b.s.Role() == RolePrimary })
	if took := time.Since(lost); took > time.Second {
		t.Errorf("takeover took %s with a detection time of 300ms", took)
	}
	if !b.float.holds("192.0.2.100/24") {
		t.Error("the new primary does not hold the shared address")
	}
	eventually(t, "the application starts on the new primary", time.Second, func() bool { return !b.app.isHeld() })
	// Meanwhile the old primary's application wrote something.
	a.write("diverged.rec", []byte("written while cut off"))
	a.write("shared.rec", []byte("changed while cut off"))

	// It comes back: two primaries, the higher epoch wins.
	a.run()
	eventually(t, "the old primary gives way", 2*time.Second, func() bool { return a.s.Role() == RoleBackup })
	if b.s.Role() != RolePrimary {
		t.Fatal("the winner gave way too")
	}
	eventually(t, "the loser syncs from the winner", 5*time.Second, func() bool {
		st := a.s.State()
		return st.LastOK != nil && st.Diverged == ""
	})
	if got, want := tree(t, a.app.dir), tree(t, b.app.dir); got != want {
		t.Fatalf("the loser did not take the winner's data:\n%s\nwant\n%s", got, want)
	}
	snaps := a.s.Snapshots()
	if len(snaps) != 1 {
		t.Fatalf("snapshots %+v", snaps)
	}
	var buf bytes.Buffer
	if err := a.s.WriteSnapshot(&buf, snaps[0].Name); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"app/diverged.rec", "written while cut off", "app/shared.rec", "changed while cut off", "config/"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the snapshot lacks %q", want)
		}
	}
}

func TestNoTakeoverWithoutTheWitness(t *testing.T) {
	a, b := pair(t)
	establish(t, a, b, fast())
	eventually(t, "the backup hears the primary", 2*time.Second, func() bool { return b.s.Status(nil).Peer.Answering })
	b.witness = errors.New("no answer within 350ms")
	a.stop()
	eventually(t, "the backup says why it waits", 3*time.Second, func() bool {
		return strings.Contains(b.s.Status(nil).Automatic.Waiting, "may be the one cut off")
	})
	if b.s.Role() != RoleBackup {
		t.Fatal("took over without the witness")
	}
	b.witness = nil
	eventually(t, "takeover once the witness answers", 3*time.Second, func() bool { return b.s.Role() == RolePrimary })
}

func TestTheRelationshipRefusesChanges(t *testing.T) {
	a, b := pair(t)
	establish(t, a, b, nil)
	req := func(method, path, body string) *http.Request {
		r, _ := http.NewRequest(method, "https://box"+path, strings.NewReader(body))
		return r
	}
	for _, c := range []struct {
		box                *box
		method, path, body string
		refused            bool
	}{
		{a, "POST", "/api/v1/install", "", true},
		{b, "POST", "/api/v1/updates/install", "{}", true},
		{a, "PUT", "/api/v1/peer-key", `{"key":"x"}`, true},
		{a, "POST", "/api/v1/restore", "", true},
		{a, "POST", "/api/v1/users", `{"name":"x"}`, false},
		{b, "POST", "/api/v1/users", `{"name":"x"}`, true},
		{b, "PUT", "/api/v1/tls", `{}`, true},
		{b, "POST", "/api/v1/certificates/abc/export", `{}`, false},
		{b, "PUT", "/api/v1/network", `{"interfaces":[],"dns":{"servers":["192.0.2.53"]}}`, false},
		{b, "PUT", "/api/v1/network", `{"interfaces":[],"dns":{"servers":["198.51.100.1"]}}`, true},
		{a, "POST", "/api/v1/network/floating/disable", `{"interface":"eth1","address":"192.0.2.100/24"}`, true},
		{a, "POST", "/api/v1/network/floating/enable", `{"interface":"eth1","address":"192.0.2.200/24"}`, false},
	} {
		code, msg := c.box.s.Refuse(req(c.method, c.path, c.body))
		if (code != 0) != c.refused {
			t.Errorf("%s %s %s on %s: %d %q", c.method, c.path, c.body, c.box.name, code, msg)
		}
	}
	if code, msg := b.s.Refuse(req("POST", "/api/v1/users", "")); !strings.Contains(msg, "change it on KEEL-A") || code != http.StatusConflict {
		t.Errorf("sentence: %d %q", code, msg)
	}
}

// A small change of a big file is staged as its changed blocks only: the
// backup needs room for the change, not for a second copy of the file.
func TestSmallChangeOfABigFileStagesOnlyTheChange(t *testing.T) {
	a, b := pair(t)
	a.write("db/big.dat", random(8<<20))
	establish(t, a, b, nil)
	b.sync()
	f, _ := os.OpenFile(filepath.Join(a.app.dir, "db/big.dat"), os.O_WRONLY, 0)
	f.WriteAt(random(4096), 3<<20)
	f.WriteAt(random(4096), 7<<20)
	f.Close()
	b.s.crashAfterCommit = true
	b.s.pull(context.Background(), nil)
	var used int64
	filepath.Walk(appStage(b.app.dir), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			used += fi.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	if used > 4*blockSize {
		t.Errorf("the sync staged %d bytes on disk for two changed blocks", used)
	}
	b.stop()
	b.start(b.s.Cert)
	b.run()
	if got, want := tree(t, b.app.dir), tree(t, a.app.dir); got != want {
		t.Errorf("after the restart the patch is not applied:\n%s\nwant\n%s", got, want)
	}
}
