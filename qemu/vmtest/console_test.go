package vmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/hwtest"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// consoleLogin logs in on the serial console's recovery menu.
func consoleLogin(t *testing.T, vm *qemu.VM, password string) {
	t.Helper()
	send(t, vm, "\r")
	expect(t, vm, `login: `, time.Minute)
	send(t, vm, "admin\r")
	expect(t, vm, `password: `, time.Minute)
	send(t, vm, password+"\r")
	expect(t, vm, `admin> choose a number: `, time.Minute)
}

// choose types a line at the menu.
func send(t *testing.T, vm *qemu.VM, s string) {
	t.Helper()
	if err := vm.Send(s); err != nil {
		t.Fatal(err)
	}
}

func expect(t *testing.T, vm *qemu.VM, re string, timeout time.Duration) []string {
	t.Helper()
	m, err := vm.Expect(re, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// grubMenu opens GRUB's hidden menu from the serial port the way an
// operator does: one Esc during the hidden wait (a second one, at the
// menu, would leave it for GRUB's command line). entry is the text of one
// of the menu's entries. The tests then move with Ctrl-N, not the arrow
// keys: an arrow is Esc [ B, and both GRUB's serial terminal and the
// firmware's console read the port, so the sequence can be split and
// arrive as a plain Esc.
func grubMenu(t *testing.T, vm *qemu.VM, entry string) {
	t.Helper()
	expect(t, vm, `Welcome to GRUB!`, 3*time.Minute)
	time.Sleep(500 * time.Millisecond)
	send(t, vm, "\x1b")
	expect(t, vm, entry, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // the menu is drawn twice (serial and console)
}

// words matches a sentence however the console wrapped it.
func words(s string) string {
	return strings.Join(strings.Fields(regexp.QuoteMeta(s)), `\s+`)
}

// A failed base upgrade as the operator at the serial console sees it:
// the banner says which version failed and why, the status entry says it
// again, and "boot the other slot once" boots the failed version (which
// fails again, and the box comes back).
func TestConsoleAfterAFailedUpgrade(t *testing.T) {
	e := Require(t)
	t.Parallel()
	keyFile := VendorKey(t)
	pkg := e.basePackageWith(t, keyFile, "1.1.0", e.faultInitramfs(t, keyFile, "health"))
	img := e.BuildImage(t, t.TempDir(), "1.0.0", "")
	vm := Boot(t, qemu.Config{Image: img})
	WaitReady(t, vm)
	if code, body := upload(t, vm, "", mustRead(t, pkg)); code != http.StatusAccepted {
		t.Fatalf("install: %d %s", code, body)
	}
	// The banner comes once the box is back on 1.0.0; the boot's own
	// lines reach the serial port through the kernel and may follow it.
	expect(t, vm, `last boot: [^=]*1\.1\.0[^=]*`+words("failed its health check"), 10*time.Minute)

	consoleLogin(t, vm, TestPassword)
	send(t, vm, "1\r")
	expect(t, vm, `== 1 Status and last boot result ==`, time.Minute)
	expect(t, vm, words("failed its health check"), time.Minute)
	expect(t, vm, `slot b: 1\.1\.0 \([^)]*marked bad\)`, time.Minute)

	send(t, vm, "4\r")
	expect(t, vm, `Type yes to do it: `, time.Minute)
	send(t, vm, "yes\r")
	expect(t, vm, `Type yes to reboot now: `, time.Minute)
	send(t, vm, "yes\r")
	expect(t, vm, `keel: booting slot b \(1\.1\.0\), trial`, 3*time.Minute)
	expect(t, vm, `keel: ready: version 1\.0\.0`, 10*time.Minute)
	st := GetStatus(t, vm, TestPassword)
	if st.Base.Version != "1.0.0" || !st.Boot.Committed || !strings.Contains(st.Boot.LastResult, "1.1.0") {
		t.Errorf("after the trial of the other slot: %+v", st.Boot)
	}
	PowerOff(t, vm)
}

// The GRUB menu's "recovery console" entry, chosen from the serial port,
// boots the good slot in recovery mode, where the console resets the
// admin password (only there) and shows the new one.
func TestConsoleFromGRUBRecoveryEntry(t *testing.T) {
	e := Require(t)
	t.Parallel()
	img := e.buildImage(t, t.TempDir(), diskimage.Options{Version: "1.0.0", GrubTimeout: 10})
	vm := Boot(t, qemu.Config{Image: img})
	grubMenu(t, vm, `keel recovery console \(slot a\)`)
	send(t, vm, "\x0e") // Ctrl-N: down to the recovery entry
	time.Sleep(500 * time.Millisecond)
	send(t, vm, "\r")
	expect(t, vm, `keel: booting slot a \(1\.0\.0\), recovery`, time.Minute)
	expect(t, vm, `RECOVERY MODE: `+words("the recovery console was chosen at the GRUB menu"), BootTimeout)

	consoleLogin(t, vm, TestPassword)
	send(t, vm, "8\r")
	expect(t, vm, `Type yes to do it: `, time.Minute)
	send(t, vm, "yes\r")
	m := expect(t, vm, `The admin password is now: (\S+)\r?\n`, time.Minute)
	code, body := API(t, vm, "GET", "/api/v1/status", m[1])
	if code != http.StatusForbidden && code != http.StatusOK {
		t.Fatalf("the new password: %d %s", code, body)
	}
	if code, _ := API(t, vm, "GET", "/api/v1/status", TestPassword); code != http.StatusUnauthorized {
		t.Errorf("the old password still opens the API: %d", code)
	}
	PowerOff(t, vm)
}

// A static address set from the console waits for its confirmation there,
// and once confirmed the API answers on it.
func TestConsoleStaticAddress(t *testing.T) {
	e := Require(t)
	t.Parallel()
	img := e.BuildImage(t, t.TempDir(), "1.0.0", "")
	port := freePort(t)
	vm := Boot(t, qemu.Config{Image: img, HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-10.0.2.16:443", port)}})
	WaitReady(t, vm)
	consoleLogin(t, vm, TestPassword)
	send(t, vm, "7\r")
	expect(t, vm, `interface: `, time.Minute)
	send(t, vm, "eth0\r")
	expect(t, vm, `address with prefix`, time.Minute)
	send(t, vm, "10.0.2.16/24\r")
	expect(t, vm, `default gateway`, time.Minute)
	send(t, vm, "10.0.2.2\r")
	expect(t, vm, `eth0 now has the static address 10\.0\.2\.16/24 and the default gateway 10\.0\.2\.2`, time.Minute)
	expect(t, vm, `keep it\? `, time.Minute)
	send(t, vm, "yes\r")
	expect(t, vm, `confirmed and saved`, time.Minute)

	// The forward QEMU set up for the DHCP address reaches nothing now:
	// the API is asked on the static one.
	c := Client()
	var last error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		req, _ := http.NewRequest("GET", fmt.Sprintf("https://127.0.0.1:%d/api/v1/network", port), nil)
		req.SetBasicAuth("admin", TestPassword)
		resp, err := c.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(b), "10.0.2.16/24") {
				last = nil
				break
			}
			err = fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		last = err
	}
	if last != nil {
		t.Fatalf("the API does not answer on the static address with it saved: %v", last)
	}
	PowerOff(t, vm)
}

// hwtest on a healthy VM (the API) passes or skips every check with its
// reason; on a VM whose disk fails reads (QEMU blkdebug), the console's
// hwtest fails the disk check and names the disk and the sectors.
func TestHWTest(t *testing.T) {
	e := Require(t)
	t.Run("healthy", func(t *testing.T) {
		t.Parallel()
		img := e.BuildImage(t, t.TempDir(), "1.0.0", "")
		vm := Boot(t, qemu.Config{Image: img, Watchdog: true})
		WaitReady(t, vm)
		code, body := APIBody(t, vm, "POST", "/api/v1/hwtest", TestPassword, `{"mode":"quick"}`)
		if code != http.StatusAccepted {
			t.Fatalf("POST /api/v1/hwtest: %d %s", code, body)
		}
		var got struct {
			Running bool           `json:"running"`
			Report  *hwtest.Report `json:"report"`
		}
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Second) {
			_, b := API(t, vm, "GET", "/api/v1/hwtest", TestPassword)
			got.Report = nil
			json.Unmarshal(b, &got)
			if !got.Running && got.Report != nil {
				break
			}
		}
		r := got.Report
		if r == nil {
			t.Fatal("no report within 3 minutes")
		}
		if !r.Passed || r.Profile != "qemu-virtio" || len(r.Checks) != 7 {
			t.Errorf("report: %+v", r)
		}
		for _, c := range r.Checks {
			if c.Status == hwtest.Fail || c.Sentence == "" {
				t.Errorf("%s: %s %q", c.Name, c.Status, c.Sentence)
			}
		}
		PowerOff(t, vm)
	})
	// GRUB's self-test entry boots the good slot with keel.hwtest=1: the
	// table comes on the console and the report is the API's last.
	t.Run("from GRUB", func(t *testing.T) {
		t.Parallel()
		img := e.buildImage(t, t.TempDir(), diskimage.Options{Version: "1.0.0", GrubTimeout: 10})
		vm := Boot(t, qemu.Config{Image: img, Watchdog: true})
		grubMenu(t, vm, `keel hardware self-test \(slot a\)`)
		send(t, vm, "\x0e") // Ctrl-N: down
		time.Sleep(300 * time.Millisecond)
		send(t, vm, "\x0e") // Ctrl-N: down
		time.Sleep(300 * time.Millisecond)
		send(t, vm, "\r")
		expect(t, vm, `keel: booting slot a \(1\.0\.0\), good`, time.Minute)
		expect(t, vm, `hwtest \(quick, profile qemu-virtio\) in [0-9.]+ s: passed`, 4*time.Minute)
		_, b := API(t, vm, "GET", "/api/v1/hwtest", TestPassword)
		var got struct {
			Report *hwtest.Report `json:"report"`
		}
		if err := json.Unmarshal(b, &got); err != nil || got.Report == nil || !got.Report.Passed {
			t.Errorf("GET /api/v1/hwtest after the boot's self-test: %s", b)
		}
		PowerOff(t, vm)
	})
	t.Run("read errors", func(t *testing.T) {
		t.Parallel()
		img := e.BuildImage(t, t.TempDir(), "1.0.0", "")
		// The bios partition is unused on a UEFI boot: only hwtest reads it.
		bios := PartitionExtent(t, img, layout.BIOS)
		bad := bios.Start/512 + 8
		vm := Boot(t, qemu.Config{Image: img, Watchdog: true, ReadErrors: []int64{bad, bad + 1}})
		WaitReady(t, vm)
		consoleLogin(t, vm, TestPassword)
		send(t, vm, "10\r")
		expect(t, vm, `disks\s+FAIL\s+`+words(fmt.Sprintf("vda: read errors at sectors %d-%d", bad, bad+1)), 3*time.Minute)
		expect(t, vm, `hwtest \(quick, profile qemu-virtio\) in [0-9.]+ s: FAILED`, time.Minute)
		PowerOff(t, vm)
	})
}
