// Command guestinit is the PID 1 of the harness's own VM tests: a tiny
// initramfs that loads the drivers it was given, reports the disks it sees,
// gets an address by DHCP from QEMU's user network, serves tcp/443 for the
// host-forward test, probes the ways out of the guest, and answers lines
// typed into the serial console. Standard library only, so the tests need
// nothing but the Go toolchain and a kernel. It is a test fixture, not
// keel's init.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

const sysFinitModule = 313 // amd64; missing from package syscall

func say(format string, args ...any) {
	fmt.Printf("keel-test: "+format+"\n", args...)
}

func main() {
	mount("devtmpfs", "/dev", "devtmpfs")
	mount("proc", "/proc", "proc")
	mount("sysfs", "/sys", "sysfs")
	say("init started")
	say("clock %s", time.Now().UTC().Format(time.RFC3339))
	loadModules()
	cmdline := readCmdline()
	time.Sleep(500 * time.Millisecond) // let drivers probe
	reportDisks()
	ifname, addr := network()
	if addr != nil {
		// Listening before "ready": the test connects right after it.
		ln, err := net.Listen("tcp", ":443")
		if err != nil {
			say("listen :443: %v", err)
		} else {
			go serveHTTPS(ln)
		}
		probe(cmdline)
	}
	say("ready %s", ifname)
	console()
}

func mount(src, dst, fstype string) {
	os.MkdirAll(dst, 0o755)
	if err := syscall.Mount(src, dst, fstype, 0, ""); err != nil {
		say("mount %s: %v", dst, err)
	}
}

func readCmdline() map[string]string {
	b, _ := os.ReadFile("/proc/cmdline")
	m := map[string]string{}
	for _, f := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "keeltest.") {
			m[strings.TrimPrefix(k, "keeltest.")] = v
		}
	}
	return m
}

// loadModules loads /modules/* in the order of /modules.load, which the
// test computed from the modules' dependencies.
func loadModules() {
	list, err := os.ReadFile("/modules.load")
	if err != nil {
		return
	}
	n := 0
	for _, name := range strings.Fields(string(list)) {
		f, err := os.Open("/modules/" + name)
		if err != nil {
			say("module %s: %v", name, err)
			continue
		}
		empty := []byte{0}
		_, _, e := syscall.Syscall(sysFinitModule, f.Fd(), uintptr(unsafe.Pointer(&empty[0])), 0)
		f.Close()
		if e != 0 && e != syscall.EEXIST {
			say("module %s: %v", name, e)
			continue
		}
		n++
	}
	say("modules loaded %d", n)
}

func reportDisks() {
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") {
			continue
		}
		size, _ := os.ReadFile("/sys/block/" + name + "/size")
		marker := ""
		if f, err := os.Open("/dev/" + name); err == nil {
			buf := make([]byte, 64)
			io.ReadFull(f, buf)
			f.Close()
			marker = strings.TrimRight(string(bytes.Trim(buf, "\x00")), "\n")
		}
		say("disk %s sectors=%s first=%q", name, strings.TrimSpace(string(size)), marker)
	}
}

// network brings up the first Ethernet interface and configures it by DHCP.
func network() (string, *net.IPNet) {
	var ifname string
	for range 50 {
		ents, _ := os.ReadDir("/sys/class/net")
		for _, e := range ents {
			if e.Name() != "lo" {
				ifname = e.Name()
			}
		}
		if ifname != "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ifname == "" {
		say("no network interface")
		return "", nil
	}
	drv, _ := os.Readlink("/sys/class/net/" + ifname + "/device/driver")
	say("nic %s driver=%s", ifname, drv[strings.LastIndex(drv, "/")+1:])
	if err := ifup("lo"); err != nil {
		say("lo up: %v", err)
	}
	if err := ifup(ifname); err != nil {
		say("%s up: %v", ifname, err)
		return ifname, nil
	}
	addr, router, err := dhcp(ifname)
	if err != nil {
		say("dhcp: %v", err)
		return ifname, nil
	}
	if err := setAddr(ifname, addr); err != nil {
		say("set address: %v", err)
		return ifname, nil
	}
	say("dhcp %s router %s", addr, router)
	return ifname, addr
}

type ifreq struct {
	Name [16]byte
	Data [24]byte
}

func ioctl(req uintptr, ifr *ifreq) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(ifr))); e != 0 {
		return e
	}
	return nil
}

func ifup(name string) error {
	var ifr ifreq
	copy(ifr.Name[:], name)
	if err := ioctl(syscall.SIOCGIFFLAGS, &ifr); err != nil {
		return err
	}
	flags := binary.NativeEndian.Uint16(ifr.Data[:2]) | syscall.IFF_UP
	binary.NativeEndian.PutUint16(ifr.Data[:2], flags)
	return ioctl(syscall.SIOCSIFFLAGS, &ifr)
}

func setAddr(name string, a *net.IPNet) error {
	set := func(req uintptr, ip net.IP) error {
		var ifr ifreq
		copy(ifr.Name[:], name)
		binary.NativeEndian.PutUint16(ifr.Data[:2], syscall.AF_INET)
		copy(ifr.Data[4:8], ip.To4())
		return ioctl(req, &ifr)
	}
	if err := set(syscall.SIOCSIFADDR, a.IP); err != nil {
		return err
	}
	return set(syscall.SIOCSIFNETMASK, net.IP(a.Mask))
}

// dhcp does DISCOVER/OFFER/REQUEST/ACK over a UDP socket bound to the
// interface: enough for slirp's DHCP server, which answers by broadcast.
func dhcp(ifname string) (*net.IPNet, net.IP, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, 0)
	if err != nil {
		return nil, nil, err
	}
	defer syscall.Close(fd)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.BindToDevice(fd, ifname); err != nil {
		return nil, nil, fmt.Errorf("bind to device: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: 68}); err != nil {
		return nil, nil, fmt.Errorf("bind :68: %w", err)
	}
	tv := syscall.Timeval{Sec: 2}
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, nil, err
	}
	xid := rand.Uint32()
	bcast := &syscall.SockaddrInet4{Port: 67, Addr: [4]byte{255, 255, 255, 255}}
	exchange := func(msgType byte, extra []byte, want byte) (dhcpMsg, error) {
		for range 5 {
			pkt := dhcpPacket(xid, iface.HardwareAddr, msgType, extra)
			if err := syscall.Sendto(fd, pkt, 0, bcast); err != nil {
				return dhcpMsg{}, fmt.Errorf("send: %w", err)
			}
			buf := make([]byte, 1500)
			for {
				n, _, err := syscall.Recvfrom(fd, buf, 0)
				if err != nil {
					break // timeout: send again
				}
				m, ok := parseDHCP(buf[:n], xid)
				if ok && m.msgType == want {
					return m, nil
				}
			}
		}
		return dhcpMsg{}, errors.New("no answer")
	}
	offer, err := exchange(1, nil, 2)
	if err != nil {
		return nil, nil, fmt.Errorf("discover: %w", err)
	}
	extra := append([]byte{50, 4}, offer.yiaddr.To4()...)
	extra = append(extra, 54, 4)
	extra = append(extra, offer.server.To4()...)
	ack, err := exchange(3, extra, 5)
	if err != nil {
		return nil, nil, fmt.Errorf("request: %w", err)
	}
	return &net.IPNet{IP: ack.yiaddr, Mask: ack.mask}, ack.router, nil
}

type dhcpMsg struct {
	msgType        byte
	yiaddr, server net.IP
	router         net.IP
	mask           net.IPMask
}

func dhcpPacket(xid uint32, mac net.HardwareAddr, msgType byte, extra []byte) []byte {
	p := make([]byte, 240)
	p[0], p[1], p[2] = 1, 1, 6 // BOOTREQUEST, Ethernet, MAC length
	binary.BigEndian.PutUint32(p[4:], xid)
	binary.BigEndian.PutUint16(p[10:], 0x8000) // broadcast reply
	copy(p[28:], mac)
	copy(p[236:], []byte{99, 130, 83, 99}) // magic cookie
	p = append(p, 53, 1, msgType)
	p = append(p, extra...)
	p = append(p, 55, 2, 1, 3) // ask for mask and router
	return append(p, 255)
}

func parseDHCP(b []byte, xid uint32) (dhcpMsg, bool) {
	var m dhcpMsg
	if len(b) < 240 || b[0] != 2 || binary.BigEndian.Uint32(b[4:]) != xid {
		return m, false
	}
	m.yiaddr = net.IP(append([]byte(nil), b[16:20]...))
	opts := b[240:]
	for len(opts) >= 2 && opts[0] != 255 {
		code, n := opts[0], int(opts[1])
		if code == 0 {
			opts = opts[1:]
			continue
		}
		if len(opts) < 2+n {
			break
		}
		v := opts[2 : 2+n]
		switch {
		case code == 53 && n == 1:
			m.msgType = v[0]
		case code == 54 && n == 4:
			m.server = net.IP(append([]byte(nil), v...))
		case code == 3 && n >= 4:
			m.router = net.IP(append([]byte(nil), v[:4]...))
		case code == 1 && n == 4:
			m.mask = net.IPMask(append([]byte(nil), v...))
		}
		opts = opts[2+n:]
	}
	return m, m.msgType != 0
}

// serveHTTPS answers plain HTTP on tcp/443: the test checks the forward, not
// TLS.
func serveHTTPS(ln net.Listener) {
	err := http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "keel-test guest %s\n", r.URL.Path)
	}))
	say("serve :443: %v", err)
}

// probe tries the ways out that the test asked about and reports each.
func probe(cmdline map[string]string) {
	if port := cmdline["gatewayport"]; port != "" {
		// The host listens on 127.0.0.1:port; without restrict=on the
		// gateway would reach it.
		c, err := net.DialTimeout("tcp", "10.0.2.2:"+port, 3*time.Second)
		if err == nil {
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			say("gateway open %q", strings.TrimSpace(line))
		} else {
			say("gateway blocked")
		}
	}
	if target := cmdline["guestfwd"]; target != "" {
		c, err := net.DialTimeout("tcp", target, 3*time.Second)
		if err != nil {
			say("guestfwd error %v", err)
			return
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		say("guestfwd got %q err=%v", strings.TrimSpace(line), err)
	}
}

// writeDisk writes a marker at byte 512 of the first disk and syncs it, so
// the test can find it in the overlay after a power cut.
func writeDisk() error {
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") {
			continue
		}
		f, err := os.OpenFile("/dev/"+name, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte("GUEST-WROTE-THIS"), 512); err != nil {
			return err
		}
		return f.Sync()
	}
	return errors.New("no disk")
}

// console answers lines typed on the serial console; "poweroff", "reboot" and
// "writedisk" do what they say.
func console() {
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch line {
		case "":
		case "poweroff":
			say("powering off")
			syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
		case "writedisk":
			say("writedisk %v", writeDisk())
		case "reboot":
			say("rebooting")
			syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
		default:
			say("got %q", line)
		}
	}
	say("console closed: %v", sc.Err())
	select {}
}
