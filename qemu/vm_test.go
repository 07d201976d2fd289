package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// bootTimeout bounds each wait on the guest. TCG on a loaded machine is
// slow; a healthy boot takes a few seconds.
const bootTimeout = 90 * time.Second

// testLog copies the serial console into the test log, line by line.
type testLog struct {
	t   *testing.T
	buf []byte
}

func (l *testLog) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		l.t.Log("console: " + strings.TrimRight(string(l.buf[:i]), "\r"))
		l.buf = l.buf[i+1:]
	}
}

func startVM(t *testing.T, cfg Config) *VM {
	t.Helper()
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	if testing.Verbose() {
		cfg.Console = &testLog{t: t}
	}
	start := time.Now()
	vm, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU started in %v: %s", time.Since(start).Round(time.Millisecond), strings.Join(vm.Args(), " "))
	t.Cleanup(func() {
		if err := vm.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return vm
}

func expect(t *testing.T, vm *VM, re string) []string {
	t.Helper()
	m, err := vm.Expect(re, bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestVMKernelPanic boots the kernel through OVMF with no root file system:
// it panics, and the harness sees it and cuts the power.
func TestVMKernelPanic(t *testing.T) {
	kernel := testKernel(t)
	start := time.Now()
	vm := startVM(t, Config{Kernel: kernel, Append: "console=ttyS0 panic=-1"})
	m := expect(t, vm, `Linux version (\S+) `)
	t.Logf("kernel %s after %v", m[1], time.Since(start).Round(time.Millisecond))
	// One pattern: the panic message contains the VFS one, and Expect's
	// cursor moves past the whole match.
	expect(t, vm, `Kernel panic - not syncing: VFS: Unable to mount root fs`)
	t.Logf("panic after %v", time.Since(start).Round(time.Millisecond))
	if err := vm.PowerCut(); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(10 * time.Second); err != nil {
		t.Fatalf("wait after power cut: %v", err)
	}
	t.Logf("QEMU start to power cut: %v", time.Since(start).Round(time.Millisecond))
	log, err := os.ReadFile(vm.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte("Kernel panic")) {
		t.Errorf("serial log %s lacks the panic", vm.LogPath())
	}
	if _, err := vm.QMP("query-status", nil); err == nil {
		t.Error("QMP answered after the power cut")
	}
}

// TestVMNoRebootExits checks that with NoReboot a panicking kernel
// (panic=-1 reboots at once) makes QEMU exit by itself, under SeaBIOS.
func TestVMNoRebootExits(t *testing.T) {
	kernel := testKernel(t)
	start := time.Now()
	vm := startVM(t, Config{Kernel: kernel, Append: "console=ttyS0 panic=-1", BIOS: true, NoReboot: true})
	if err := vm.Wait(bootTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("QEMU start to exit: %v", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(vm.Output(), "Kernel panic") {
		t.Errorf("no panic in the output:\n%s", vm.con.tail(tailBytes))
	}
	if !slices.ContainsFunc(vm.Events(), func(e Event) bool { return e.Name == "SHUTDOWN" }) {
		t.Errorf("no SHUTDOWN event in %v", vm.Events())
	}
	if _, err := vm.Expect("never printed", time.Minute); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Expect on an exited VM: %v, want an immediate 'exited' error", err)
	}
}

// TestVMGuest boots the test initramfs on each disk bus and NIC and checks
// what the harness promises: the guest sees the disk and NIC, gets DHCP on
// the restricted user network, is reachable on the HTTPS forward, reaches
// the host only through a guestfwd, and its disk writes land in the overlay,
// never in the image. Each case adds a harness feature.
func TestVMGuest(t *testing.T) {
	kernel := testKernel(t)
	initrd := guestInitramfs(t, kernel,
		"virtio_pci", "virtio_blk", "virtio_net", "e1000", "ahci", "sd_mod", "nvme", "i6300esb")

	cases := []struct {
		bus, nic, diskPrefix, driver string
	}{
		{"virtio", "virtio", "vd", "virtio_net"},
		{"ahci", "e1000", "sd", "e1000"},
		{"nvme", "virtio", "nvme", "virtio_net"},
	}
	for i, tc := range cases {
		t.Run(tc.bus+"-"+tc.nic, func(t *testing.T) {
			dir := t.TempDir()
			image := filepath.Join(dir, "image.raw")
			writeImage(t, image)
			sum := fileSum(t, image)

			gatewayPort := serveLine(t, "host secret\n")
			fwdPort := serveHTTP(t)
			cfg := Config{
				Image:   image,
				WorkDir: filepath.Join(dir, "vm"),
				DiskBus: tc.bus,
				NIC:     tc.nic,
				Kernel:  kernel,
				Initrd:  initrd,
				// loglevel=1 keeps the kernel's messages (warnings
				// included: loglevel=4 still let one split a line on the
				// shared console with 2 CPUs) off the init's lines.
				Append: fmt.Sprintf("console=ttyS0 loglevel=1 panic=-1 keeltest.gatewayport=%d keeltest.guestfwd=10.0.2.100:80",
					gatewayPort),
				GuestFwd: []string{fmt.Sprintf("tcp:10.0.2.100:80-tcp:127.0.0.1:%d", fwdPort)},
			}
			switch i {
			case 1:
				cfg.Watchdog = true
				cfg.RTCBase = "2020-01-01T00:00:00"
				cfg.MAC = "52:54:00:00:00:42"
			case 2:
				cfg.BIOS = true
				cfg.CPUs = 2
			}
			start := time.Now()
			vm := startVM(t, cfg)

			if i == 1 {
				expect(t, vm, `keel-test: clock 2020-01-01T`)
			}
			m := expect(t, vm, `keel-test: disk (\w+) sectors=(\d+) first="KEEL-TEST-DISK"`)
			if !strings.HasPrefix(m[1], tc.diskPrefix) || m[2] != "131072" {
				t.Errorf("disk %s with %s sectors, want %s* with 131072", m[1], m[2], tc.diskPrefix)
			}
			// The line end matters: Expect matches output as it arrives, and
			// (\S+) would take half a driver name still on its way.
			m = expect(t, vm, `keel-test: nic (\w+) driver=(\S+)[\r\n]`)
			if m[2] != tc.driver {
				t.Errorf("NIC driver %s, want %s", m[2], tc.driver)
			}
			// With restrict=on, slirp's DHCP offers no router and no DNS
			// server (libslirp leaves those options out): no way out.
			expect(t, vm, `keel-test: dhcp 10\.0\.2\.15/24 router <nil>\n`)
			t.Logf("DHCP done %v after start", time.Since(start).Round(time.Millisecond))
			expect(t, vm, `keel-test: gateway blocked`)
			expect(t, vm, `keel-test: guestfwd got "HTTP/1.0 200 OK"`)
			expect(t, vm, `keel-test: ready`)
			t.Logf("guest ready %v after start", time.Since(start).Round(time.Millisecond))

			body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/forwarded", vm.HTTPSPort()))
			if body != "keel-test guest /forwarded\n" {
				t.Errorf("HTTPS forward answered %q", body)
			}
			if err := vm.Send("hello console\r\n"); err != nil {
				t.Fatal(err)
			}
			expect(t, vm, `keel-test: got "hello console"`)
			if err := vm.Send("writedisk\n"); err != nil {
				t.Fatal(err)
			}
			expect(t, vm, `keel-test: writedisk <nil>`)

			switch i {
			case 0:
				// Reset restarts the guest: Expect's cursor is past the first
				// boot, so this match is the second one.
				if err := vm.Reset(); err != nil {
					t.Fatal(err)
				}
				expect(t, vm, `keel-test: init started`)
				expect(t, vm, `keel-test: ready`)
				if err := vm.PowerButton(); err != nil {
					t.Fatal(err)
				}
				waitEvent(t, vm, "POWERDOWN")
				waitEvent(t, vm, "RESET")
			}

			if err := vm.PowerCut(); err != nil {
				t.Fatal(err)
			}
			if err := vm.Wait(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			if got := fileSum(t, image); got != sum {
				t.Fatal("the image changed")
			}
			raw := filepath.Join(dir, "flat.raw")
			if out, err := exec.Command("qemu-img", "convert", "-O", "raw", vm.DiskPath(), raw).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img convert: %v\n%s", err, out)
			}
			head := readHead(t, raw, 1024)
			if !bytes.HasPrefix(head, []byte("KEEL-TEST-DISK")) || !bytes.HasPrefix(head[512:], []byte("GUEST-WROTE-THIS")) {
				t.Errorf("overlay content %q", head)
			}

			if i == 0 {
				// A power cycle boots the same disk again.
				vm2, err := vm.Restart(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				defer vm2.Close()
				if vm2.HTTPSPort() != vm.HTTPSPort() || vm2.LogPath() == vm.LogPath() {
					t.Errorf("restart: port %d log %s, first boot port %d log %s", vm2.HTTPSPort(), vm2.LogPath(), vm.HTTPSPort(), vm.LogPath())
				}
				if _, err := vm2.Expect(`keel-test: ready`, bootTimeout); err != nil {
					t.Fatal(err)
				}
				vm2.Send("poweroff\n")
				if err := vm2.Wait(bootTimeout); err != nil {
					t.Fatalf("guest poweroff: %v", err)
				}
				if !slices.ContainsFunc(vm2.Events(), func(e Event) bool { return e.Name == "SHUTDOWN" }) {
					t.Errorf("no SHUTDOWN event in %v", vm2.Events())
				}
			}
		})
	}
}

// TestVMPortInUse checks that a taken HTTPS port fails Start with QEMU's
// explanation, and that a port Start picks itself survives the race.
func TestVMPortInUse(t *testing.T) {
	kernel := testKernel(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = Start(context.Background(), Config{Kernel: kernel, BIOS: true, HTTPSPort: port, WorkDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Fatalf("Start on a taken port: %v", err)
	}
	t.Log(err)
}

func waitEvent(t *testing.T, vm *VM, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if slices.ContainsFunc(vm.Events(), func(e Event) bool { return e.Name == name }) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("no %s event in %v", name, vm.Events())
}

// writeImage writes a sparse 64 MiB raw image that starts with a marker.
func writeImage(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("KEEL-TEST-DISK\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func readHead(t *testing.T, path string, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// serveLine listens on 127.0.0.1 and writes line to each connection; the
// guest must not reach it through the gateway.
func serveLine(t *testing.T, line string) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, line)
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// serveHTTP serves HTTP/1.0 on 127.0.0.1 for the guestfwd test.
func serveHTTP(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "host\n")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
