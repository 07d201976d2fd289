package sandbox

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary is the sandbox's exec helper, as the agent binary is on
// the box.
func TestMain(m *testing.M) {
	MaybeExec()
	os.Exit(m.Run())
}

const appUID = 900

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root (mounts, cgroups, setuid); run as root")
	}
}

// box is a fake appliance: the agent's data, an application slot and its
// data folder, and a prepared root.
type box struct {
	dir, secret, slot, data string
	root                    *Root
}

func newBox(t *testing.T) *box {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	// The application's user reaches the box's folder outside the sandbox
	// too (TestExecConfines's control).
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	b := &box{dir: dir, secret: filepath.Join(dir, "data/keel/identity.key"), slot: filepath.Join(dir, "run/app/a"), data: filepath.Join(dir, "data/apps/demo")}
	for _, d := range []string{filepath.Dir(b.secret), b.slot, b.data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(b.secret, []byte("agent secret\n"), 0o644) // readable by anyone who can see it
	os.WriteFile(filepath.Join(b.slot, "app.json"), []byte("{}\n"), 0o644)
	os.Chown(b.data, appUID, appUID)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, err := PrepareRoot(RootConfig{Dir: filepath.Join(dir, "sandbox/demo"), Slot: b.slot, Data: b.data, Exec: exe})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	b.root = r
	return b
}

// cmd runs script with sh as the application would run, confined.
func (b *box) cmd(nproc int, script string) *exec.Cmd {
	c := exec.Command(ExecPath)
	c.Args = ExecArgs(nproc, "/bin/sh", []string{"-c", script})
	c.Dir = b.data
	c.Env = []string{"PATH=/usr/bin:/bin", "DATA_DIR=" + b.data}
	c.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     b.root.Dir,
		Setpgid:    true,
		Credential: &syscall.Credential{Uid: appUID, Gid: appUID, Groups: []uint32{}},
	}
	return c
}

func (b *box) run(t *testing.T, script string) string {
	t.Helper()
	out, err := b.cmd(64, script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// The application sees its slot (read-only), its data folder, a private
// /tmp and only its own processes; the agent's data is not there.
func TestRootHidesTheAgent(t *testing.T) {
	b := newBox(t)
	out := b.run(t, `
		test -e `+b.secret+` && echo SEES-SECRET
		test -e `+filepath.Dir(filepath.Dir(b.secret))+`/keel && echo SEES-KEEL-DIR
		cat `+b.slot+`/app.json >/dev/null && echo READS-SLOT
		touch `+b.slot+`/x 2>/dev/null && echo WRITES-SLOT
		echo hi > "$DATA_DIR/file" && echo WRITES-DATA
		echo hi > /tmp/x && echo WRITES-TMP
		touch /newfile 2>/dev/null && echo WRITES-ROOT
		test -e /proc/1 && echo SEES-PID1
		ls /proc | grep -c '^[0-9]' | sed 's/^/PROCS=/'
	`)
	for _, want := range []string{"READS-SLOT", "WRITES-DATA", "WRITES-TMP"} {
		if !strings.Contains(out, want) {
			t.Errorf("the application cannot do what it should (%s):\n%s", want, out)
		}
	}
	for _, bad := range []string{"SEES-SECRET", "SEES-KEEL-DIR", "WRITES-SLOT", "WRITES-ROOT", "SEES-PID1"} {
		if strings.Contains(out, bad) {
			t.Errorf("the application can %s:\n%s", bad, out)
		}
	}
	if data, err := os.ReadFile(filepath.Join(b.data, "file")); err != nil || string(data) != "hi\n" {
		t.Errorf("the data folder outside does not hold what the app wrote: %q %v", data, err)
	}
}

// no_new_privs and the seccomp filter hold for the application and what
// it runs. add_key, which any user may call, is the filter's witness: it
// works for the application's user outside the sandbox and is refused
// inside.
func TestExecConfines(t *testing.T) {
	b := newBox(t)
	out := b.run(t, `grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status`)
	if !strings.Contains(out, "NoNewPrivs:\t1") || !strings.Contains(out, "Seccomp:\t2") {
		t.Errorf("not confined:\n%s", out)
	}
	// The control runs a copy of the test binary where the application's
	// user can reach it (go test's own folder is root's alone).
	exe, _ := os.Executable()
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	exe = filepath.Join(b.dir, "helper")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	helper := func(c *exec.Cmd) string {
		c.Env = []string{"KEEL_SECCOMP_HELPER=1"}
		if c.SysProcAttr == nil {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: appUID, Gid: appUID, Groups: []uint32{}}}
		}
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return string(out)
	}
	if out := helper(exec.Command(exe, "-test.run=^TestSeccompHelper$")); !strings.Contains(out, "add_key=ok") {
		t.Fatalf("add_key fails for the application's user without the sandbox, so the filter cannot be shown:\n%s", out)
	}
	inside := b.cmd(64, "")
	inside.Args = ExecArgs(64, ExecPath, []string{"-test.run=^TestSeccompHelper$"})
	if out := helper(inside); !strings.Contains(out, "add_key="+unix.EPERM.Error()) {
		t.Errorf("add_key inside the sandbox: want EPERM from the filter:\n%s", out)
	}
}

// TestSeccompHelper is run by TestExecConfines; alone it does nothing.
func TestSeccompHelper(t *testing.T) {
	if os.Getenv("KEEL_SECCOMP_HELPER") == "" {
		return
	}
	if _, err := unix.AddKey("user", "keel-sandbox-test", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING); err != nil {
		fmt.Printf("add_key=%v\n", err)
		return
	}
	fmt.Println("add_key=ok")
}

// A fork bomb stops at the process limit; the agent (root) can still
// start processes meanwhile.
func TestForkBombIsContained(t *testing.T) {
	b := newBox(t)
	// A bounded bomb: 400 sleepers wanted; the shell gives up at the first
	// fork the limit refuses.
	c := b.cmd(32, `i=0; while [ $i -lt 400 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done; sleep 30`)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		unix.Kill(-c.Process.Pid, unix.SIGKILL)
		killUser(appUID)
		c.Wait()
	}()
	time.Sleep(2 * time.Second)
	if err := exec.Command("true").Run(); err != nil {
		t.Errorf("the agent cannot start a process: %v", err)
	}
	if n := countUser(appUID); n > 32 || n < 2 {
		t.Errorf("%d processes of the application's user under a limit of 32", n)
	} else {
		t.Logf("%d processes of the application's user under a limit of 32", n)
	}
}

func userPids(uid int) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name(), &st) == nil && int(st.Uid) == uid {
			pids = append(pids, pid)
		}
	}
	return pids
}

func countUser(uid int) int { return len(userPids(uid)) }

func killUser(uid int) {
	for _, p := range userPids(uid) {
		unix.Kill(p, unix.SIGKILL)
	}
}

// mountCgroup2 mounts the v2 hierarchy for a test (the host may keep its
// controllers in v1; membership and cgroup.kill work without them).
func mountCgroup2(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(CgroupRoot, "cgroup.controllers")); err == nil {
		return CgroupRoot
	}
	dir := t.TempDir()
	if err := unix.Mount("cgroup2", dir, "cgroup2", 0, ""); err != nil {
		t.Skipf("cgroup v2 cannot be mounted here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// A child that left the process group and the session with setsid is
// gone once the cgroup is killed.
func TestCgroupKillTakesDetachedChildren(t *testing.T) {
	b := newBox(t)
	root := mountCgroup2(t)
	cg, err := NewCgroup(root, "keel-test-"+strconv.Itoa(os.Getpid()), "demo", Limits{Pids: 64, MemoryMax: 256 << 20, CPUWeight: 50})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cg.Remove()
		os.Remove(filepath.Dir(cg.Dir))
	})
	t.Logf("limits not enforced here (no controller): %v", cg.Missing)
	fd, err := cg.FD()
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	c := b.cmd(64, `setsid sleep 300 & echo $! > "$DATA_DIR/pid"; exec sleep 300`)
	c.SysProcAttr.UseCgroupFD, c.SysProcAttr.CgroupFD = true, int(fd.Fd())
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go c.Wait()
	var detached int
	for i := 0; i < 500 && detached == 0; i++ {
		time.Sleep(10 * time.Millisecond)
		if b, err := os.ReadFile(filepath.Join(b.data, "pid")); err == nil {
			detached, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	if detached == 0 {
		t.Fatal("the detached child did not start")
	}
	// Killing the process group, as before cgroups, leaves it running.
	unix.Kill(-c.Process.Pid, unix.SIGKILL)
	time.Sleep(50 * time.Millisecond)
	if unix.Kill(detached, 0) != nil {
		t.Fatal("the detached child died with its group: the test shows nothing")
	}
	if err := cg.Kill(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && unix.Kill(detached, 0) == nil; i++ {
		time.Sleep(10 * time.Millisecond) // reaped by init
	}
	if procs, _ := cg.Procs(); len(procs) != 0 {
		t.Errorf("processes left in the cgroup: %v", procs)
	}
}

// In a cgroup with the bind guard, the application binds its declared
// port (and port 0), over IPv4 and IPv6, and nothing else.
func TestBindGuardAllowsOnlyDeclaredPorts(t *testing.T) {
	b := newBox(t)
	root := mountCgroup2(t)
	cg, err := NewCgroup(root, "keel-test-"+strconv.Itoa(os.Getpid()), "bind", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cg.Remove()
		os.Remove(filepath.Dir(cg.Dir))
	})
	if err := cg.GuardBinds([]int{18080}); err != nil {
		t.Fatal(err)
	}
	fd, err := cg.FD()
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	// The test binary binds, as the application would, from inside.
	exe := ExecPath
	c := exec.Command(exe)
	c.Args = ExecArgs(64, ExecPath, []string{"-test.run=^TestBindHelper$"})
	c.Env = []string{"KEEL_BIND_HELPER=1"}
	c.SysProcAttr = &syscall.SysProcAttr{Chroot: b.root.Dir, UseCgroupFD: true, CgroupFD: int(fd.Fd()),
		Credential: &syscall.Credential{Uid: appUID, Gid: appUID, Groups: []uint32{}}}
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"tcp4:18080=ok", "tcp6:18080=ok", "tcp4:0=ok", "tcp4:18081=refused", "tcp6:18081=refused", "udp4:18082=refused"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("want %s:\n%s", want, out)
		}
	}
}

// TestBindHelper is run by TestBindGuardAllowsOnlyDeclaredPorts inside the
// sandbox; alone it does nothing.
func TestBindHelper(t *testing.T) {
	if os.Getenv("KEEL_BIND_HELPER") == "" {
		return
	}
	for _, c := range []struct {
		network, addr string
	}{{"tcp4", "127.0.0.1:18080"}, {"tcp6", "[::1]:18080"}, {"tcp4", "127.0.0.1:0"}, {"tcp4", "127.0.0.1:18081"}, {"tcp6", "[::1]:18081"}, {"udp4", "127.0.0.1:18082"}} {
		_, port, _ := net.SplitHostPort(c.addr)
		var err error
		if strings.HasPrefix(c.network, "udp") {
			var l net.PacketConn
			if l, err = net.ListenPacket(c.network, c.addr); err == nil {
				l.Close()
			}
		} else {
			var l net.Listener
			if l, err = net.Listen(c.network, c.addr); err == nil {
				l.Close()
			}
		}
		switch {
		case err == nil:
			fmt.Printf("%s:%s=ok\n", c.network, port)
		case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
			fmt.Printf("%s:%s=refused\n", c.network, port)
		default:
			fmt.Printf("%s:%s=error %v\n", c.network, port, err)
		}
	}
}
