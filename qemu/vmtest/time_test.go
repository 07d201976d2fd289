package vmtest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"keel.dev/keel/qemu"
)

// A box whose RTC is years in the past steps its clock from an NTP server
// (chrony on the host's loopback, reached through QEMU's user network),
// writes the RTC, and keeps the right time across a reboot with the server
// gone. The host's clock is never touched: chronyd runs with -x.
func TestClockStepsFromNTPAndSurvivesReboot(t *testing.T) {
	e := Require(t)
	port, stop := startChrony(t)
	vm := Boot(t, qemu.Config{Image: e.Image, RTCBase: "2020-01-01T00:00:00", HostLoopback: true})
	WaitReady(t, vm)
	pw := Password(vm)
	if off := clockOffset(t, vm, pw); off > -365*24*time.Hour {
		t.Fatalf("the box's clock is only %v off before any sync; -rtc base did not take", off)
	}
	syncClock(t, vm, pw, port)
	if off := clockOffset(t, vm, pw); off > time.Second || off < -time.Second {
		t.Fatalf("after the step the box is %v off the host", off)
	}

	// Reboot with the server gone: the time now comes from the RTC, which
	// counts whole seconds.
	stop()
	if code, body := API(t, vm, "POST", "/api/v1/power/reboot", pw); code != http.StatusAccepted {
		t.Fatalf("reboot: %d %s", code, body)
	}
	if _, err := vm.Expect(`keel: reboot`, ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, vm)
	// The RTC counts whole seconds; the agent sets it so that it ticks on
	// the second, and the kernel reads it at boot with half a second added:
	// that explains half a second. Under QEMU TCG the box comes back between
	// 0.7 s behind and 1.2 s ahead (five runs); the rest is not explained
	// yet (issue 5 stays open for it). 3 s still tells a written RTC from an
	// unwritten one, which is years off.
	off := clockOffset(t, vm, pw)
	t.Logf("after the reboot the box is %v off the host", off)
	if off > 3*time.Second || off < -3*time.Second {
		t.Fatalf("after the reboot the box is %v off the host: the RTC was not written", off)
	}
	PowerOff(t, vm)
}

// clockOffset is the box's clock minus the host's, taking the request's
// midpoint as the moment the box read its clock. Only a request that
// answered at once counts: a retry while the box's network comes up would
// move the midpoint by seconds.
func clockOffset(t *testing.T, vm *qemu.VM, pw string) time.Duration {
	t.Helper()
	url := fmt.Sprintf("https://127.0.0.1:%d/api/v1/time", vm.HTTPSPort())
	var last error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		req, _ := http.NewRequest("GET", url, nil)
		req.SetBasicAuth("admin", pw)
		before := time.Now()
		resp, err := Client().Do(req)
		after := time.Now()
		if err != nil {
			last = err
			continue
		}
		var v struct {
			Now time.Time `json:"now"`
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("GET /api/v1/time: %d %v", resp.StatusCode, err)
		}
		if after.Sub(before) > time.Second {
			last = fmt.Errorf("the answer took %v", after.Sub(before))
			continue // too slow to place the box's reading within a second
		}
		return v.Now.Sub(before.Add(after.Sub(before) / 2))
	}
	t.Fatalf("could not read the box's clock: %v", last)
	return 0
}

// startChrony runs an NTP server (chronyd -x: it never sets the host's
// clock) on host loopback, which a guest with HostLoopback reaches at
// 10.0.2.2:port. stop ends it early; the test's cleanup ends it anyway.
func startChrony(t *testing.T) (port int, stop func()) {
	t.Helper()
	chronyd, err := exec.LookPath("chronyd")
	if err != nil {
		t.Fatal("chronyd not found: run `make deps` (Debian package chrony)")
	}
	port = freeUDPPort(t)
	dir := t.TempDir()
	conf := filepath.Join(dir, "chrony.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("port %d\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\npidfile %s/chronyd.pid\ndriftfile %s/drift\n", port, dir, dir)), 0o644)
	srv := exec.Command(chronyd, "-x", "-d", "-f", conf)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			srv.Process.Kill()
			srv.Wait()
			stopped = true
		}
	}
	t.Cleanup(stop)
	return port, stop
}

// syncClock points the box at an NTP server and waits until it synchronized.
func syncClock(t *testing.T, vm *qemu.VM, pw string, port int) {
	t.Helper()
	if code, body := APIBody(t, vm, "PUT", "/api/v1/time", pw, fmt.Sprintf(`{"servers":["10.0.2.2:%d"]}`, port)); code != http.StatusOK {
		t.Fatalf("PUT /api/v1/time: %d %s", code, body)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if code, _ := API(t, vm, "POST", "/api/v1/time/sync", pw); code == http.StatusOK {
			return
		}
	}
	t.Fatal("the box never synchronized with the NTP server")
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
