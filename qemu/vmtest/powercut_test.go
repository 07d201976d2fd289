package vmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/qemu"
)

// Where in an install the power is cut. Each point waits for its moment,
// then a random delay spreads the cut over the stretch that follows.
var cutPoints = []struct {
	name  string
	wait  func(t *testing.T, vm *qemu.VM) error
	delay time.Duration // the cut comes up to this long after the moment
}{
	// The payload streams into the inactive slot: the first half of the
	// job's progress.
	{"streaming", func(t *testing.T, vm *qemu.VM) error { return waitProgress(vm, 0.02) }, 300 * time.Millisecond},
	// The read-back, the boot state written for the trial, the answer and
	// the start of the reboot.
	{"boot state", func(t *testing.T, vm *qemu.VM) error { return waitProgress(vm, 0.5) }, 2 * time.Second},
	// GRUB, the kernel and the agent of the first trial boot.
	{"first trial boot", func(t *testing.T, vm *qemu.VM) error {
		_, err := vm.Expect(`keel: reboot`, BootTimeout)
		return err
	}, 12 * time.Second},
	// The trial boot's health check and commit: the last phase before it
	// is the API's.
	{"commit", func(t *testing.T, vm *qemu.VM) error {
		if _, err := vm.Expect(`keel: reboot`, BootTimeout); err != nil {
			return err
		}
		_, err := vm.Expect(`phase=API `, BootTimeout)
		return err
	}, 400 * time.Millisecond},
}

// Cutting the power at any moment of an install leaves a box that boots
// (GRUB always finds a slot), comes up on a committed slot or on a whole
// trial slot that then commits, and keeps its configuration. make test runs
// one cut at each point; make soak runs KEEL_SOAK cuts at random points.
func TestPowerCutDuringInstall(t *testing.T) {
	e := Require(t)
	keyFile := VendorKey(t)
	img := e.BuildImage(t, t.TempDir(), "1.0.0", "")
	pkg := mustRead(t, e.basePackage(t, keyFile, "1.1.0"))
	n, _ := strconv.Atoi(os.Getenv("KEEL_SOAK"))
	soak := n > 0
	if !soak {
		n = len(cutPoints)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	var survived atomic.Int32
	t.Run("cuts", func(t *testing.T) {
		for i := 0; i < n; i++ {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			point := cutPoints[i%len(cutPoints)]
			if soak {
				point = cutPoints[rng.IntN(len(cutPoints))]
			}
			delay := time.Duration(rng.Int64N(int64(point.delay)))
			t.Run(fmt.Sprintf("%03d %s +%v", i, point.name, delay.Round(time.Millisecond)), func(t *testing.T) {
				t.Parallel()
				vm := Boot(t, qemu.Config{Image: img})
				WaitReady(t, vm)
				setHostname(t, vm, "cut-test")
				go uploadQuietly(vm, pkg) // its connection dies with the box
				if err := point.wait(t, vm); err != nil {
					t.Fatalf("waiting for the %s: %v", point.name, err)
				}
				time.Sleep(delay)
				if err := vm.PowerCut(); err != nil {
					t.Fatal(err)
				}
				vm = Restart(t, vm)
				WaitReady(t, vm)
				st := GetStatus(t, vm, TestPassword)
				if !st.Boot.Committed || !(st.Base.Version == "1.0.0" && st.Base.Slot == "a" || st.Base.Version == "1.1.0" && st.Base.Slot == "b") {
					t.Errorf("after the cut: version %s in slot %s, committed %v (%s)", st.Base.Version, st.Base.Slot, st.Boot.Committed, st.Boot.LastResult)
				}
				if h := hostname(t, vm); h != "cut-test" {
					t.Errorf("after the cut the configured host name is %q, want cut-test", h)
				}
				t.Logf("came back on %s in slot %s: %s", st.Base.Version, st.Base.Slot, st.Boot.LastResult)
				PowerOff(t, vm)
				Fsck(t, RawDisk(t, vm))
				if !t.Failed() {
					survived.Add(1)
				}
			})
		}
	})
	msg := fmt.Sprintf("power cuts during an install: %d of %d survived", survived.Load(), n)
	t.Log(msg)
	// go test hides a passing package's output: make soak prints this file.
	if f := os.Getenv("KEEL_SOAK_REPORT"); f != "" {
		if err := os.WriteFile(f, []byte(msg+"\n"), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// waitProgress waits until the running install job has reached p.
func waitProgress(vm *qemu.VM, p float64) error {
	url := fmt.Sprintf("https://127.0.0.1:%d/api/v1/jobs", vm.HTTPSPort())
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		req, _ := http.NewRequest("GET", url, nil)
		req.SetBasicAuth("admin", TestPassword)
		resp, err := Client().Do(req)
		if err != nil {
			continue
		}
		var v api.Jobs
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || len(v.Jobs) == 0 {
			continue
		}
		if j := v.Jobs[0]; j.State == api.JobFailed {
			return fmt.Errorf("the install failed: %s", j.Message)
		} else if j.Progress >= p || j.State == "done" {
			return nil
		}
	}
	return fmt.Errorf("the install job never reached %.0f%%", p*100)
}

// uploadQuietly posts a package and ignores the outcome: the test cuts
// the power under it.
func uploadQuietly(vm *qemu.VM, pkg []byte) {
	request(vm.HTTPSPort(), "POST", "/api/v1/install", TestPassword, bytes.NewReader(pkg), 5*time.Minute)
}

// setHostname changes one setting of the box's configuration, for the test
// to find again after the cut.
func setHostname(t *testing.T, vm *qemu.VM, name string) {
	t.Helper()
	code, body := API(t, vm, "GET", "/api/v1/network", TestPassword)
	var v struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(body, &v); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/network: %d %s", code, body)
	}
	v.Config["hostname"] = name
	b, _ := json.Marshal(v.Config)
	if code, body := APIBody(t, vm, "PUT", "/api/v1/network", TestPassword, string(b)); code != http.StatusOK {
		t.Fatalf("PUT /api/v1/network with hostname %s: %d %s", name, code, body)
	}
}

func hostname(t *testing.T, vm *qemu.VM) string {
	t.Helper()
	code, body := API(t, vm, "GET", "/api/v1/network", TestPassword)
	var v struct {
		Config struct {
			Hostname string `json:"hostname"`
		} `json:"config"`
	}
	if err := json.Unmarshal(body, &v); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/network: %d %s", code, body)
	}
	return v.Config.Hostname
}
