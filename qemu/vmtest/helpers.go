package vmtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
)

// Timeouts for TCG, which is 10–20 times slower than the host.
const (
	BootTimeout     = 3 * time.Minute
	ShutdownTimeout = time.Minute
)

// Env is what the VM tests need from `make test`.
type Env struct {
	Image     string // built image (raw), never modified
	KernelDir string
	Initramfs string
}

// Require skips the test unless VM tests are enabled and returns their env.
func Require(t testing.TB) Env {
	t.Helper()
	if os.Getenv("KEEL_VM") != "1" {
		t.Skip("VM test: set KEEL_VM=1 and KEEL_IMAGE (make test does) to boot images under QEMU")
	}
	e := Env{Image: os.Getenv("KEEL_IMAGE"), KernelDir: os.Getenv("KEEL_KERNEL_DIR"), Initramfs: os.Getenv("KEEL_INITRAMFS")}
	if _, err := os.Stat(e.Image); err != nil {
		t.Fatalf("KEEL_IMAGE=%q: %v (run make image)", e.Image, err)
	}
	return e
}

// VendorKey is the vendor signing key the built images trust.
func VendorKey(t testing.TB) string {
	t.Helper()
	k := os.Getenv("KEEL_VENDOR_KEY")
	if k == "" {
		t.Fatal("KEEL_VENDOR_KEY must name the vendor key the image trusts (make test sets it)")
	}
	return k
}

// TestPassword is the admin password of images the tests build themselves.
const TestPassword = "vm-test-password"

// BuildImage writes a fresh image into dir with the test password and, when
// versionB is set, both base slots filled.
func (e Env) BuildImage(t testing.TB, dir, version, versionB string) string {
	t.Helper()
	return e.buildImage(t, dir, diskimage.Options{Version: version, VersionB: versionB})
}

// buildImage writes an image of this tree's kernel and initramfs into dir
// with the test password and o's versions and app.
func (e Env) buildImage(t testing.TB, dir string, o diskimage.Options) string {
	t.Helper()
	if e.KernelDir == "" || e.Initramfs == "" {
		t.Fatal("KEEL_KERNEL_DIR and KEEL_INITRAMFS must be set (make test does)")
	}
	rel, err := os.ReadFile(filepath.Join(e.KernelDir, "version"))
	if err != nil {
		t.Fatal(err)
	}
	o.Out = filepath.Join(dir, "keel.img")
	o.Kernel, o.KernelRelease, o.Initramfs = filepath.Join(e.KernelDir, "vmlinuz"), strings.TrimSpace(string(rel)), e.Initramfs
	o.AdminPassword, o.BuildTime = TestPassword, time.Now()
	if o.GrubTimeout == 0 {
		o.GrubTimeout = 1
	}
	if o.GrubMenuTimeout == 0 {
		o.GrubMenuTimeout = 2 // fallbacks show the menu; tests have several
	}
	if err := diskimage.Build(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	return o.Out
}

// Boot starts a VM on img and registers its cleanup. The console goes to a
// file in the test's temp dir, named in the log on failure.
func Boot(t testing.TB, cfg qemu.Config) *qemu.VM {
	t.Helper()
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	vm, err := qemu.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	watch(t, vm)
	return vm
}

// Restart power-cycles a VM that has exited (after PowerCut) and registers
// the new one's cleanup.
func Restart(t testing.TB, vm *qemu.VM) *qemu.VM {
	t.Helper()
	nvm, err := vm.Restart(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	watch(t, nvm)
	return nvm
}

// watch closes vm when the test ends and, when it failed, shows the end of
// the serial console and keeps the whole of it in KEEL_VM_LOGS.
func watch(t testing.TB, vm *qemu.VM) {
	t.Cleanup(func() {
		vm.Close()
		if t.Failed() {
			t.Logf("serial console:\n%s", tail(vm.Output(), 6000))
			if e := strings.TrimSpace(vm.Stderr()); e != "" {
				t.Logf("QEMU said:\n%s", tail(e, 2000))
			}
			if dir := os.Getenv("KEEL_VM_LOGS"); dir != "" {
				// serial.log, serial-2.log after a restart
				suffix := strings.TrimPrefix(filepath.Base(vm.LogPath()), "serial")
				// A test with several VMs keeps each one's console: the
				// work folder's name tells them apart.
				name := filepath.Join(dir, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())+"-"+filepath.Base(vm.WorkDir())+suffix)
				if os.MkdirAll(dir, 0o755) == nil && os.WriteFile(name, []byte(vm.Output()), 0o644) == nil {
					t.Logf("whole console in %s", name)
				}
			}
		}
	})
}

// WaitReady waits for the agent's ready line and returns it.
func WaitReady(t testing.TB, vm *qemu.VM) string {
	t.Helper()
	m, err := vm.Expect(`keel: ready[^\r\n]*`, BootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return m[0]
}

// Password is the admin password to use: on a box that printed a
// first-boot password (which opens nothing but its own change), it is
// changed to TestPassword first; otherwise the image's preseeded one.
func Password(t testing.TB, vm *qemu.VM) string {
	t.Helper()
	if first := FirstPassword(vm); first != "" {
		body := fmt.Sprintf(`{"current":%q,"new":%q}`, first, TestPassword)
		code, b := APIBody(t, vm, "POST", "/api/v1/users/admin/password", first, body)
		// 401: changed already, by an earlier call for this box.
		if code != http.StatusOK && code != http.StatusUnauthorized {
			t.Fatalf("change the first-boot password: %d %s", code, b)
		}
		return TestPassword
	}
	if p := os.Getenv("KEEL_ADMIN_PASSWORD"); p != "" {
		return p
	}
	return TestPassword
}

// FirstPassword is the first-boot password the console printed, or "".
func FirstPassword(vm *qemu.VM) string {
	if m := regexp.MustCompile(`initial admin password: (\S+)`).FindStringSubmatch(vm.Output()); m != nil {
		return m[1]
	}
	return ""
}

// Client is an HTTPS client for the box's self-signed certificate.
func Client() *http.Client {
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// API calls the box's API with the admin password, retrying while the
// network comes up.
func API(t testing.TB, vm *qemu.VM, method, path, password string) (int, []byte) {
	t.Helper()
	return APIBody(t, vm, method, path, password, "")
}

// APIBody is API with a JSON request body.
func APIBody(t testing.TB, vm *qemu.VM, method, path, password, body string) (int, []byte) {
	t.Helper()
	url := fmt.Sprintf("https://127.0.0.1:%d%s", vm.HTTPSPort(), path)
	deadline := time.Now().Add(90 * time.Second)
	for {
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if password != "" {
			req.SetBasicAuth("admin", password)
		}
		resp, err := Client().Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		time.Sleep(time.Second)
	}
}

// GetStatus reads /api/v1/status.
func GetStatus(t testing.TB, vm *qemu.VM, password string) api.Status {
	t.Helper()
	code, body := API(t, vm, "GET", "/api/v1/status", password)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/status: %d %s", code, body)
	}
	var s api.Status
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("status: %v: %s", err, body)
	}
	return s
}

// PowerOff presses the power button and waits for QEMU to exit by itself.
func PowerOff(t testing.TB, vm *qemu.VM) {
	t.Helper()
	if err := vm.PowerButton(); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ShutdownTimeout); err != nil {
		t.Fatalf("QEMU did not exit after the power button: %v", err)
	}
}

// RawDisk converts a VM's overlay to a raw image for inspection. -U reads
// it even while the VM runs and QEMU holds its lock: what the guest has
// synced is there.
func RawDisk(t testing.TB, vm *qemu.VM) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "disk.raw")
	if b, err := exec.Command("qemu-img", "convert", "-U", "-O", "raw", vm.DiskPath(), out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	return out
}

// PartitionExtent locates a partition of a raw image of the default layout.
func PartitionExtent(t testing.TB, img, name string) layout.Extent {
	t.Helper()
	e, err := diskimage.PartitionOf(img, name)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Fsck runs e2fsck -fn on the data partition of a raw image.
func Fsck(t testing.TB, img string) {
	t.Helper()
	e := PartitionExtent(t, img, layout.Data)
	out, err := exec.Command("e2fsck", "-fn", fmt.Sprintf("%s?offset=%d", img, e.Start)).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn on the data partition: %v\n%s", err, out)
	}
}

// CopyImage makes a sparse copy of img that a test may modify.
func CopyImage(t testing.TB, img string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(img))
	if b, err := exec.Command("cp", "--sparse=always", img, out).CombinedOutput(); err != nil {
		t.Fatalf("copy image: %v: %s", err, b)
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
