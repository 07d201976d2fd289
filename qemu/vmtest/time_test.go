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

	"keel.dev/keel/agent/timesync"
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
	pw := Password(t, vm)
	if off := clockOffset(t, vm, pw); off > -365*24*time.Hour {
		t.Fatalf("the box's clock is only %v off before any sync; -rtc base did not take", off)
	}
	syncClock(t, vm, pw, port)
	stepped := clockOffset(t, vm, pw)
	if stepped > time.Second || stepped < -time.Second {
		t.Fatalf("after the step the box is %v off the host", stepped)
	}
	before := timeStatus(t, vm, pw)
	if before.Written.IsZero() || before.Error != "" {
		t.Fatalf("after the step the hardware clock was not written: %+v", before)
	}

	// Reboot with the server gone: the time now comes from the RTC. The
	// kernel reads its whole second with half a second added; the agent
	// then watches for its next tick and takes off the offset it measured
	// after the write. That is exact to a few milliseconds when nothing
	// else writes the RTC (with SeaBIOS and a direct kernel boot: 11 ms),
	// but OVMF rewrites it at every boot with the second it read a moment
	// before, which under TCG moves it by 0.2-0.7 s (ten runs: -0.48 to
	// +0.72 s after the reboot). The issue asks for 1 s.
	stop()
	if code, body := API(t, vm, "POST", "/api/v1/power/reboot", pw); code != http.StatusAccepted {
		t.Fatalf("reboot: %d %s", code, body)
	}
	if _, err := vm.Expect(`keel: reboot`, ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, vm)
	var after timesync.RTCStatus
	for deadline := time.Now().Add(30 * time.Second); after.Read.IsZero(); time.Sleep(200 * time.Millisecond) {
		if after = timeStatus(t, vm, pw); time.Now().After(deadline) {
			t.Fatalf("the box did not set its clock from the hardware clock: %+v", after)
		}
	}
	off := clockOffset(t, vm, pw)
	t.Logf("after the step the box was %v off the host; the hardware clock's offset after the write %.1f ms; boot step %.1f ms; after the reboot the box is %v off", stepped, before.OffsetMS, after.BootStepMS, off)
	if off > time.Second || off < -time.Second {
		t.Fatalf("after the reboot the box is %v off the host", off)
	}
	PowerOff(t, vm)
}

// timeStatus is the hardware clock's part of GET /api/v1/time.
func timeStatus(t *testing.T, vm *qemu.VM, pw string) timesync.RTCStatus {
	t.Helper()
	code, body := API(t, vm, "GET", "/api/v1/time", pw)
	var v struct {
		Status struct {
			RTC *timesync.RTCStatus `json:"rtc"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(body), &v); code != http.StatusOK || err != nil || v.Status.RTC == nil {
		t.Fatalf("GET /api/v1/time: %d %v %s", code, err, body)
	}
	return *v.Status.RTC
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
