// Package nstest builds throwaway network namespaces for tests that need
// root: a hub namespace holding a bridge, and nodes each joined to it by a
// veth pair. Nothing is connected to the host's network, so test traffic
// cannot leave the namespaces. Everything is removed when the test ends.
package nstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/netcfg"
)

// T is the part of testing.TB a Lab uses; a command (the network
// benchmarks) can supply its own.
type T interface {
	Helper()
	Cleanup(func())
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
}

// RequireRoot skips the test unless it runs as root with iproute2.
func RequireRoot(t T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (run the tests as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: needs the ip command (iproute2)")
	}
}

// Lab is a set of namespaces on one bridge.
type Lab struct {
	t      T
	prefix string
	hub    string
	mu     sync.Mutex
	nodes  int
}

// New makes the hub namespace and its bridge; it needs root (call
// RequireRoot first).
func New(t T) *Lab {
	t.Helper()
	// The counter keeps two labs of one test (a routed topology) apart.
	l := &Lab{t: t, prefix: fmt.Sprintf("keel%d%x%d", os.Getpid(), time.Now().UnixNano()&0xfff, labs.Add(1))}
	l.hub = l.prefix + "-hub"
	l.ns("add", l.hub)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", l.hub).Run() })
	l.ip("-n", l.hub, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
	l.ip("-n", l.hub, "link", "set", "br0", "up")
	return l
}

var labs atomic.Uint32

// Node is one namespace with an interface eth0 on the lab's bridge.
type Node struct {
	Name string // namespace name, for `ip netns exec`
	Path string // /run/netns/Name
	NS   netcfg.NS
	MAC  net.HardwareAddr // eth0's
	lab  *Lab
}

// Node adds a namespace whose eth0 is on the bridge and up, with loopback
// up.
func (l *Lab) Node(name string) *Node {
	l.t.Helper()
	l.mu.Lock()
	l.nodes++
	peer := fmt.Sprintf("p%d", l.nodes)
	l.mu.Unlock()
	n := &Node{Name: l.prefix + "-" + name, lab: l}
	n.Path = "/run/netns/" + n.Name
	l.ns("add", n.Name)
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", n.Name).Run() })
	l.ip("-n", l.hub, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", n.Name)
	l.ip("-n", l.hub, "link", "set", peer, "master", "br0", "up")
	l.ip("-n", n.Name, "link", "set", "lo", "up")
	l.ip("-n", n.Name, "link", "set", "eth0", "up")
	ns, err := netcfg.NSFromPath(n.Path)
	if err != nil {
		l.t.Fatal(err)
	}
	n.NS = ns
	l.t.Cleanup(func() { n.NS.Close() })
	ifi := n.Exec("cat", "/sys/class/net/eth0/address")
	if n.MAC, err = net.ParseMAC(strings.TrimSpace(ifi)); err != nil {
		l.t.Fatalf("eth0 MAC of %s: %v", n.Name, err)
	}
	return n
}

// Attach joins an existing node (of this lab or another) to this lab's
// bridge with a new interface ifname, up: a node attached to two labs is a
// router between two segments.
func (l *Lab) Attach(n *Node, ifname string) {
	l.t.Helper()
	l.mu.Lock()
	l.nodes++
	peer := fmt.Sprintf("p%d", l.nodes)
	l.mu.Unlock()
	l.ip("-n", l.hub, "link", "add", peer, "type", "veth", "peer", "name", ifname, "netns", n.Name)
	l.ip("-n", l.hub, "link", "set", peer, "master", "br0", "up")
	l.ip("-n", n.Name, "link", "set", ifname, "up")
}

// Exec runs a command inside the node and returns its output, failing the
// test if it fails.
func (n *Node) Exec(args ...string) string {
	n.lab.t.Helper()
	out, err := n.Try(args...)
	if err != nil {
		n.lab.t.Fatalf("%s: %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Try runs a command inside the node and returns its output and error.
func (n *Node) Try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Start runs a long-lived command inside the node; it is killed when the
// test ends. Its output is collected in the returned buffer.
func (n *Node) Start(args ...string) *Proc {
	n.lab.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proc{cancel: cancel, done: make(chan struct{})}
	p.cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		cancel()
		n.lab.t.Fatalf("start %s: %v", strings.Join(args, " "), err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	n.lab.t.Cleanup(p.Stop)
	return p
}

// Proc is a command started with Start.
type Proc struct {
	cmd    *exec.Cmd
	cancel context.CancelFunc
	done   chan struct{}
	out    syncBuffer
}

// Stop kills the process and waits for it.
func (p *Proc) Stop() {
	p.cancel()
	<-p.done
}

// Output is what the process has written so far.
func (p *Proc) Output() string { return p.out.String() }

// Exited is closed when the process ends.
func (p *Proc) Exited() <-chan struct{} { return p.done }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (l *Lab) ns(args ...string) {
	l.t.Helper()
	l.ip(append([]string{"netns"}, args...)...)
}

func (l *Lab) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Eventually polls cond every 20 ms until it returns true or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Tap makes a tap device on the lab's bridge and returns it open: a VM's
// NIC on the lab's segment (qemu.Config.Segment). The device lives in the
// hub namespace and goes when the file is closed (at the test's end).
func (l *Lab) Tap(name string) *os.File {
	l.t.Helper()
	ns, err := netcfg.NSFromPath("/run/netns/" + l.hub)
	if err != nil {
		l.t.Fatal(err)
	}
	defer ns.Close()
	var f *os.File
	err = ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("make tap %s: %w", name, err)
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
		return nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() { f.Close() })
	l.ip("-n", l.hub, "link", "set", name, "master", "br0", "up")
	return f
}

// HubAddress gives the bridge itself an address: the hub namespace is
// then a host on the segment (a witness, a prober).
func (l *Lab) HubAddress(cidr string) {
	l.t.Helper()
	l.ip("-n", l.hub, "addr", "add", cidr, "dev", "br0")
}

// Hub is the hub namespace's name, for `ip netns exec`.
func (l *Lab) Hub() string { return l.hub }

// Isolate sets the bridge port's isolation: isolated ports reach the
// bridge itself and ports that are not isolated, but not each other.
func (l *Lab) Isolate(port string, on bool) {
	l.t.Helper()
	v := "off"
	if on {
		v = "on"
	}
	l.ip("-n", l.hub, "link", "set", "dev", port, "type", "bridge_slave", "isolated", v)
}
