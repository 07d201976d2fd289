package vmtest

import (
	"net/http"
	"strings"
	"testing"

	"keel.dev/keel/qemu"
)

// The built image boots through UEFI and GRUB to the agent, reports what it
// runs over the API, and powers off cleanly on the ACPI power button.
func TestBootStatusPowerButton(t *testing.T) {
	e := Require(t)
	vm := Boot(t, qemu.Config{Image: e.Image})
	WaitReady(t, vm)
	pw := Password(vm)

	if code, _ := API(t, vm, "GET", "/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := API(t, vm, "GET", "/api/v1/status", ""); code != http.StatusUnauthorized {
		t.Errorf("status without credentials: %d %s", code, body)
	}
	if code, _ := API(t, vm, "GET", "/api/v1/status", pw+"x"); code != http.StatusUnauthorized {
		t.Errorf("status with a wrong password: %d", code)
	}
	st := GetStatus(t, vm, pw)
	if st.Base.Slot != "a" || !st.Boot.Committed || st.Boot.Recovery || st.Base.Version == "unknown" {
		t.Errorf("status: %+v", st)
	}
	if want := imageVersion(t, e.Image); st.Base.Version != want {
		t.Errorf("version %q, want the built %q", st.Base.Version, want)
	}
	if st.Serial == "" || !strings.HasSuffix(st.Kernel, "amd64") || st.UptimeS <= 0 || st.Boot.LastResult == "" {
		t.Errorf("status lacks serial, kernel, uptime or last result: %+v", st)
	}

	// The network manager runs DHCP on the NIC by default, and the time
	// service answers (unsynchronised: QEMU's isolated network has no NTP).
	if code, body := API(t, vm, "GET", "/api/v1/network", pw); code != http.StatusOK || !strings.Contains(string(body), `"dhcp"`) {
		t.Errorf("GET /api/v1/network: %d %s", code, body)
	}
	if code, body := API(t, vm, "GET", "/api/v1/time", pw); code != http.StatusOK || !strings.Contains(string(body), `"synchronized"`) {
		t.Errorf("GET /api/v1/time: %d %s", code, body)
	}

	PowerOff(t, vm)
	if !strings.Contains(vm.Output(), "unmounted") {
		t.Error("the console does not show the data partition being unmounted")
	}
	Fsck(t, RawDisk(t, vm))
}

// The same image boots on other hardware: drivers are loaded by modalias.
func TestOtherHardware(t *testing.T) {
	e := Require(t)
	for _, hw := range []struct{ disk, nic string }{{"ahci", "e1000"}, {"nvme", "virtio"}} {
		t.Run(hw.disk+"-"+hw.nic, func(t *testing.T) {
			t.Parallel()
			vm := Boot(t, qemu.Config{Image: e.Image, DiskBus: hw.disk, NIC: hw.nic})
			WaitReady(t, vm)
			st := GetStatus(t, vm, Password(vm))
			if st.Base.Slot != "a" || !st.Boot.Committed || st.Boot.Recovery {
				t.Errorf("status on %s/%s: %+v", hw.disk, hw.nic, st)
			}
			PowerOff(t, vm)
		})
	}
}
