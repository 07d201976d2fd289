package apps

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/sandbox"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/appspec"
	"keel.dev/keel/image/layout"
)

// demoBins holds the demo built at the versions the tests install.
var (
	demoOnce sync.Once
	demoDir  string
	demoErr  error
)

func TestMain(m *testing.M) {
	sandbox.MaybeExec() // the test binary confines the app, as the agent does
	code := m.Run()
	if demoDir != "" {
		os.RemoveAll(demoDir)
	}
	os.Exit(code)
}

func demoBin(t *testing.T, version string) string {
	t.Helper()
	demoOnce.Do(func() {
		demoDir, demoErr = os.MkdirTemp("", "keel-apps-demo")
		if demoErr != nil {
			return
		}
		for _, v := range []string{"1.0.0", "1.1.0", appimage.BrokenDemoVersion} {
			if demoErr = appimage.BuildDemo(filepath.Join(demoDir, v), v); demoErr != nil {
				return
			}
		}
	})
	if demoErr != nil {
		t.Fatal(demoErr)
	}
	return filepath.Join(demoDir, version)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs applications as another user, with a capability, from bind-mounted slots")
	}
}

// box is a Manager on temp folders whose slots are folders bind-mounted
// read-only, as squashfs partitions are on the box.
type box struct {
	t    *testing.T
	root string
	slot map[layout.Label]string // slot -> folder holding its files
	m    *Manager
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newBox(t *testing.T) *box {
	t.Helper()
	needRoot(t)
	root := t.TempDir()
	// The application's user must reach its slot and data folders.
	for d := root; d != filepath.Dir(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if d == os.TempDir() {
			break
		}
	}
	b := &box{t: t, root: root, slot: map[layout.Label]string{}, logs: &syncBuffer{}}
	for _, s := range layout.Labels {
		b.slot[s] = filepath.Join(root, "slot-"+string(s))
		if err := os.MkdirAll(b.slot[s], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b.m = b.manager()
	t.Cleanup(func() {
		b.m.Stop()
		for _, s := range []string{"a", "b"} {
			unix.Unmount(filepath.Join(root, "run", s), unix.MNT_DETACH)
		}
	})
	return b
}

// manager is a new Manager on the box's folders, as after a reboot.
func (b *box) manager() *Manager {
	return &Manager{
		Slots:    slots.NewAppStore(filepath.Join(b.root, "data/keel/apps/state.json")),
		RunDir:   filepath.Join(b.root, "run"),
		DataRoot: filepath.Join(b.root, "data/apps"),
		Mount: func(slot layout.Label, dir string) error {
			if ents, _ := os.ReadDir(b.slot[slot]); len(ents) == 0 {
				return ErrEmptySlot
			}
			if err := unix.Mount(b.slot[slot], dir, "", unix.MS_BIND, ""); err != nil {
				return err
			}
			return unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
		},
		Unmount:    UnmountDir,
		SandboxDir: filepath.Join(b.root, "sandbox"),
		Log:        slog.New(slog.NewTextHandler(b.logs, nil)),
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 300 * time.Millisecond,
	}
}

// install writes an application into a slot folder: app.json and files
// (destination -> host file, or "#!" script content).
func (b *box) install(slot layout.Label, spec appspec.Spec, files map[string]string) {
	b.t.Helper()
	dir := b.slot[slot]
	os.RemoveAll(dir)
	aj, err := appspec.Marshal(spec)
	if err != nil {
		b.t.Fatal(err)
	}
	write := func(name string, data []byte, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			b.t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			b.t.Fatal(err)
		}
	}
	write(appspec.File, aj, 0o644)
	for dst, src := range files {
		data := []byte(src)
		if !strings.HasPrefix(src, "#!") {
			if data, err = os.ReadFile(src); err != nil {
				b.t.Fatal(err)
			}
		}
		write(dst, data, 0o755)
	}
}

func (b *box) installDemo(slot layout.Label, version string, port int) {
	b.t.Helper()
	spec := appimage.DemoSpec(version)
	spec.Env = map[string]string{"PORT": strconv.Itoa(port)}
	spec.Ports = []int{port}
	spec.Health.HTTP.Port = port
	spec.Health.Timeout = appspec.Duration(3 * time.Second)
	spec.Health.Interval = appspec.Duration(100 * time.Millisecond)
	spec.StopTimeout = appspec.Duration(2 * time.Second)
	b.install(slot, spec, map[string]string{"/bin/demo": demoBin(b.t, version)})
}

func (b *box) mounted(slot layout.Label) bool {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		b.t.Fatal(err)
	}
	return bytes.Contains(mi, []byte(" "+filepath.Join(b.root, "run", string(slot))+" "))
}

func (b *box) state() slots.AppState {
	b.t.Helper()
	st, err := slots.NewAppStore(b.m.Slots.Path).Load()
	if err != nil {
		b.t.Fatal(err)
	}
	return st
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeLowPort finds a port below 1024 nothing listens on.
func freeLowPort(t *testing.T) int {
	t.Helper()
	for p := 901; p < 1024; p++ {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err == nil {
			l.Close()
			return p
		}
	}
	t.Skip("no free port below 1024")
	return 0
}

type demoInfo struct {
	Version string `json:"version"`
	Counter int64  `json:"counter"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
}

func info(t *testing.T, port int) demoInfo {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/api/info", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var i demoInfo
	if err := json.NewDecoder(resp.Body).Decode(&i); err != nil {
		t.Fatal(err)
	}
	return i
}

func count(t *testing.T, port int) int64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/count?inc=1", port))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("count: %q", b)
	}
	return n
}

// procStatus reads fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunsUnprivilegedWithOnlyTheBindCapability(t *testing.T) {
	b := newBox(t)
	port := freeLowPort(t)
	b.installDemo("a", "1.0.0", port)
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.m.WaitHealthy(context.Background()); err != nil {
		t.Fatalf("%v\n%s", err, b.logs)
	}
	s := b.m.Status()
	if s.State != StateRunning || s.Name != "demo" || s.Version != "1.0.0" || s.Slot != "a" || s.PID == 0 ||
		!strings.Contains(s.LastResult, "found in slot a") {
		t.Errorf("status %+v", s)
	}
	ps := procStatus(t, s.PID)
	for k, want := range map[string]string{
		"Uid": "900 900 900 900", "Gid": "900 900 900 900", "Groups": "",
		"CapEff": "0000000000000400", "CapPrm": "0000000000000400", "CapAmb": "0000000000000400",
	} {
		if ps[k] != want {
			t.Errorf("%s: %q, want %q", k, ps[k], want)
		}
	}
	if i := info(t, port); i.UID != DefaultUID || i.GID != DefaultGID || i.Version != "1.0.0" {
		t.Errorf("the demo says %+v", i)
	}
	if pgid, _ := unix.Getpgid(s.PID); pgid != s.PID {
		t.Errorf("process group %d, want its own %d", pgid, s.PID)
	}
	data := filepath.Join(b.root, "data/apps/demo")
	var st unix.Stat_t
	if err := unix.Stat(data, &st); err != nil || st.Uid != DefaultUID || st.Mode&0o777 != 0o700 {
		t.Errorf("data folder: uid %d mode %o %v", st.Uid, st.Mode&0o777, err)
	}
	// It runs in its own root, confined: its data folder has the same
	// path inside.
	if s.Confinement == nil || s.Confinement.Root != filepath.Join(b.root, "sandbox/demo") {
		t.Fatalf("confinement %+v", s.Confinement)
	}
	if root, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", s.PID)); root != s.Confinement.Root {
		t.Errorf("root %s, want the sandbox %s", root, s.Confinement.Root)
	}
	if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", s.PID)); cwd != filepath.Join(s.Confinement.Root, data) {
		t.Errorf("cwd %s", cwd)
	}
	if ps["NoNewPrivs"] != "1" || ps["Seccomp"] != "2" {
		t.Errorf("NoNewPrivs %q, Seccomp %q: not confined", ps["NoNewPrivs"], ps["Seccomp"])
	}
	env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", s.PID))
	if !bytes.Contains(env, []byte("DATA_DIR="+data+"\x00")) || !bytes.Contains(env, []byte(fmt.Sprintf("PORT=%d\x00", port))) {
		t.Errorf("environment %q", env)
	}
	if st := b.state(); st.Active != "a" || !st.Committed || st.Slots["a"].Version != "1.0.0" {
		t.Errorf("state %+v", st)
	}
	// Its output reaches the agent's log under its name.
	waitFor(t, "the demo's output in the log", 2*time.Second, func() bool {
		return strings.Contains(b.logs.String(), "listening on") && strings.Contains(b.logs.String(), "app=demo")
	})

	pid := s.PID
	if err := b.m.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Error("the demo still runs after Stop")
	}
	if b.mounted("a") {
		t.Error("slot a is still mounted after Stop")
	}
	if s := b.m.Status(); s.State != StateStopped {
		t.Errorf("status after Stop %+v", s)
	}
}

func TestNoCapabilityWithoutALowPort(t *testing.T) {
	b := newBox(t)
	port := freePort(t)
	b.installDemo("a", "1.0.0", port)
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.m.WaitHealthy(context.Background()); err != nil {
		t.Fatal(err)
	}
	ps := procStatus(t, b.m.Status().PID)
	if ps["CapEff"] != "0000000000000000" || ps["CapAmb"] != "0000000000000000" || ps["Uid"] != "900 900 900 900" {
		t.Errorf("status %v", ps)
	}
}

// The counter survives an update; a broken version is rolled back and the
// old one answers again with the counter intact.
func TestSwitchKeepsDataAndRollsBackABrokenVersion(t *testing.T) {
	b := newBox(t)
	port := freePort(t)
	b.installDemo("a", "1.0.0", port)
	ctx := context.Background()
	if err := b.m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.m.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		count(t, port)
	}

	b.installDemo("b", "1.1.0", port)
	if err := b.m.Switch(ctx, "b", "1.1.0"); err != nil {
		t.Fatalf("%v\n%s", err, b.logs)
	}
	if i := info(t, port); i.Version != "1.1.0" || i.Counter != 3 {
		t.Errorf("after the update the demo says %+v", i)
	}
	if n := count(t, port); n != 4 {
		t.Errorf("count %d", n)
	}
	st := b.state()
	if st.Active != "b" || !st.Committed || st.Previous != "" || st.Slots["b"] != (slots.AppSlot{Name: "demo", Version: "1.1.0"}) ||
		!strings.Contains(st.LastResult, "app demo 1.1.0 passed its health check and runs from slot b (was 1.0.0)") {
		t.Errorf("state %+v", st)
	}
	if name, v, ok := b.m.Installed(); !ok || name != "demo" || v.String() != "1.1.0" || b.m.Slots.State().CommittedSlot() != "b" {
		t.Errorf("installed %s %v %v, active %s", name, v, ok, b.m.Slots.State().CommittedSlot())
	}
	if b.mounted("a") || !b.mounted("b") {
		t.Errorf("mounted: a %v, b %v; the inactive slot must be free for the next install", b.mounted("a"), b.mounted("b"))
	}

	b.installDemo("a", appimage.BrokenDemoVersion, port)
	start := time.Now()
	err := b.m.Switch(ctx, "a", appimage.BrokenDemoVersion)
	if err == nil {
		t.Fatal("the broken version was committed")
	}
	t.Logf("%v (after %v)", err, time.Since(start).Round(time.Millisecond))
	if !strings.HasPrefix(err.Error(), "app 2.0.1 failed its health check (") || !strings.HasSuffix(err.Error(), "); back on 1.1.0") ||
		!strings.Contains(err.Error(), "500 Internal Server Error") {
		t.Errorf("error %q", err)
	}
	if i := info(t, port); i.Version != "1.1.0" || i.Counter != 4 {
		t.Errorf("after the rollback the demo says %+v", i)
	}
	st = b.state()
	if st.Active != "b" || !st.Committed || st.LastResult != err.Error() || !st.Slots["a"].Failed || st.Slots["a"].Version != "2.0.1" {
		t.Errorf("state %+v", st)
	}
	if s := b.m.Status(); s.Version != "1.1.0" || s.Slot != "b" || s.State != StateRunning || s.LastResult != err.Error() {
		t.Errorf("status %+v", s)
	}
	if b.mounted("a") {
		t.Error("the failed slot a is still mounted")
	}

	// A version that is not the package's is not committed either.
	b.installDemo("a", "1.0.0", port)
	if err := b.m.Switch(ctx, "a", "1.2.0"); err == nil || !strings.Contains(err.Error(), "app 1.2.0 could not be started (its app.json says version 1.0.0); back on 1.1.0") {
		t.Errorf("mismatched version: %v", err)
	}
	if err := b.m.Switch(ctx, "b", "1.1.0"); err == nil || !strings.Contains(err.Error(), "runs the current application") {
		t.Errorf("switch to the running slot: %v", err)
	}

	// After a reboot the committed version runs with its data.
	b.m.Stop()
	b.m = b.manager()
	if err := b.m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.m.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if i := info(t, port); i.Version != "1.1.0" || i.Counter != 4 {
		t.Errorf("after a restart the demo says %+v", i)
	}
}

func TestFirstInstallOnABoxWithoutApplication(t *testing.T) {
	b := newBox(t)
	ctx := context.Background()
	if err := b.m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s := b.m.Status(); s.State != StateNone || s.Name != "" {
		t.Errorf("status %+v", s)
	}
	if _, _, ok := b.m.Installed(); ok || b.m.Slots.State().CommittedSlot() != "" {
		t.Error("an application is installed on an empty box")
	}
	if err := b.m.WaitHealthy(ctx); err != nil {
		t.Errorf("no application is healthy: %v", err)
	}
	port := freePort(t)
	b.installDemo("a", appimage.BrokenDemoVersion, port)
	if err := b.m.Switch(ctx, "a", "2.0.1"); err == nil || !strings.HasSuffix(err.Error(), "; no application runs") {
		t.Errorf("broken first install: %v", err)
	}
	if s := b.m.Status(); s.State != StateNone {
		t.Errorf("status %+v", s)
	}
	b.installDemo("a", "1.0.0", port)
	if err := b.m.Switch(ctx, "a", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if s := b.m.Status(); s.State != StateRunning || s.Version != "1.0.0" {
		t.Errorf("status %+v", s)
	}
}

func TestInterruptedSwitchGoesBack(t *testing.T) {
	b := newBox(t)
	port := freePort(t)
	b.installDemo("a", "1.1.0", port)
	b.installDemo("b", "1.0.0", port)
	st := b.m.Slots
	if _, err := st.Commit("b", "demo", "1.0.0", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StageTrial("a", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.m.WaitHealthy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if i := info(t, port); i.Version != "1.0.0" {
		t.Errorf("runs %+v", i)
	}
	st2 := b.state()
	if st2.Active != "b" || !st2.Committed || !st2.Slots["a"].Failed ||
		st2.LastResult != "app 1.1.0 was not committed: the box restarted before its health check passed; back on 1.0.0" {
		t.Errorf("state %+v", st2)
	}
}

func TestCrashLoopIsReported(t *testing.T) {
	b := newBox(t)
	b.m.CrashLoopExits = 4
	b.install("a", appspec.Spec{Name: "crasher", Version: "1.0.0", Command: "/bin/crash", Health: appspec.Health{Timeout: appspec.Duration(time.Second)}},
		map[string]string{"/bin/crash": "#!/bin/sh\necho \"dying as $(id -u)\" >&2\nexit 3\n"})
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a crash loop", 5*time.Second, func() bool { return b.m.Status().State == StateCrashLooping })
	s := b.m.Status()
	if s.LastExit != "exit status 3" || s.Restarts < 4 {
		t.Errorf("status %+v", s)
	}
	logs := b.logs.String()
	if !strings.Contains(logs, "crash-looping") || !strings.Contains(logs, `msg="dying as 900" app=crasher`) {
		t.Errorf("log:\n%s", logs)
	}
	// It keeps retrying, slowly.
	waitFor(t, "another retry", 3*time.Second, func() bool { return b.m.Status().Restarts > s.Restarts })
	err := b.m.WaitHealthy(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("health of a crash loop: %v", err)
	}
}

func TestStopKillsTheWholeGroupAfterItsTimeout(t *testing.T) {
	b := newBox(t)
	b.install("a", appspec.Spec{Name: "stubborn", Version: "1.0.0", Command: "/bin/run", StopTimeout: appspec.Duration(300 * time.Millisecond),
		Health: appspec.Health{Command: []string{"/bin/check"}, Interval: appspec.Duration(50 * time.Millisecond), Timeout: appspec.Duration(5 * time.Second)}},
		map[string]string{
			"/bin/run":   "#!/bin/sh\ntrap '' TERM\nsleep 1000 &\necho $! > \"$DATA_DIR/child\"\nwhile :; do sleep 1; done\n",
			"/bin/check": "#!/bin/sh\n[ \"$(id -u)\" = 900 ] && [ -s \"$DATA_DIR/child\" ]\n",
		})
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.m.WaitHealthy(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(b.root, "data/apps/stubborn/child"))
	child, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	pid := b.m.Status().PID
	start := time.Now()
	b.m.Stop()
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("Stop took %v with a stop timeout of 300ms", took)
	}
	for _, p := range []int{pid, child} {
		// The orphaned child may linger as a zombie until this machine's
		// init reaps it.
		waitFor(t, fmt.Sprintf("process %d to die", p), 2*time.Second, func() bool { return !alive(p) })
	}
	if !strings.Contains(b.logs.String(), "did not stop after SIGTERM") {
		t.Error("the kill is not logged")
	}
}

// switchWithCheck runs 1.0.0 from slot a, then switches to 1.1.0 in slot b
// whose health command is the shell script check, within a 1 s window.
func switchWithCheck(t *testing.T, check string) error {
	b := newBox(t)
	b.install("a", appspec.Spec{Name: "x", Version: "1.0.0", Command: "/bin/run"},
		map[string]string{"/bin/run": "#!/bin/sh\nexec sleep 1000\n"})
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.install("b", appspec.Spec{Name: "x", Version: "1.1.0", Command: "/bin/run",
		Health: appspec.Health{Command: []string{"/bin/check"}, Interval: appspec.Duration(100 * time.Millisecond), Timeout: appspec.Duration(time.Second)}},
		map[string]string{"/bin/run": "#!/bin/sh\nexec sleep 1000\n", "/bin/check": check})
	return b.m.Switch(context.Background(), "b", "1.1.0")
}

func TestHealthCommandFailure(t *testing.T) {
	err := switchWithCheck(t, "#!/bin/sh\necho not ready\nexit 1\n")
	if err == nil || err.Error() != "app 1.1.0 failed its health check (it did not pass within 1s: /bin/check: exit status 1: not ready); back on 1.0.0" {
		t.Errorf("error %v", err)
	}
}

// When the window ends during an attempt, the operator still reads what
// the last attempt that ended on its own said, not only that one hung.
func TestHealthCommandCutOffByTheWindow(t *testing.T) {
	// The first attempt fails at once; the next ones outlast the window.
	err := switchWithCheck(t, "#!/bin/sh\nif [ -e tried ]; then exec sleep 30; fi\n: > tried\necho database not reachable\nexit 3\n")
	if err == nil || err.Error() != "app 1.1.0 failed its health check (it did not pass within 1s: /bin/check: exit status 3: database not reachable); back on 1.0.0" {
		t.Errorf("error %v", err)
	}
}

func TestEmptySlotsAndDamagedSpec(t *testing.T) {
	b := newBox(t)
	os.WriteFile(filepath.Join(b.slot["b"], appspec.File), []byte(`{"name":"x"}`), 0o644)
	if err := b.m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := b.m.Status(); s.State != StateNone {
		t.Errorf("status %+v", s)
	}
	if b.mounted("b") {
		t.Error("a slot without a valid app.json stays mounted")
	}
	if !strings.Contains(b.logs.String(), "app.json: version") {
		t.Errorf("the damaged app.json is not reported:\n%s", b.logs)
	}
}

// alive says whether pid is a process that has not exited.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}
