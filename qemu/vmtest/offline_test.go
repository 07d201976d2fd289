package vmtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/qemu"
)

// The offline path of the vendor guide: the box issues a download key
// (once its clock is synchronized), the operator redeems it on a machine
// that reaches the vendor and uploads the bundle, and the box installs
// everything in order as one job across the base's reboot. A forged key is
// refused by the server.
func TestOfflineBundleInstallsInOrderAcrossReboot(t *testing.T) {
	e := Require(t)
	t.Parallel()
	srv := e.newRelease(t, "*=0")
	// Leave out the broken 2.0.1 so the bundle ends on a healthy version.
	ms, _ := filepath.Glob(filepath.Join(srv.dir, "packages", "*2.0.1*.kpkg"))
	for _, m := range ms {
		os.Remove(m)
	}
	keyPEM, err := os.ReadFile(VendorKey(t))
	if err != nil {
		t.Fatal(err)
	}
	vendor, err := kpkg.ParsePrivateKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.Build(srv.dir, vendor, time.Now()); err != nil {
		t.Fatal(err)
	}
	ntp, _ := startChrony(t)
	img := e.BuildImageApp(t, t.TempDir(), "1.0.0", "1.0.0")
	appPort := freeTCPPort(t)
	vm := Boot(t, qemu.Config{Image: img, HostLoopback: true, HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", appPort, appimage.DemoPort)}})
	WaitReady(t, vm)
	demoInfo(t, appPort, true)

	if code, body := API(t, vm, "GET", "/api/v1/updates/download-key", TestPassword); code != http.StatusConflict || !strings.Contains(string(body), "NTP") {
		t.Errorf("a download key before the clock is synchronized: %d %s", code, body)
	}
	syncClock(t, vm, TestPassword, ntp)
	code, key := API(t, vm, "GET", "/api/v1/updates/download-key", TestPassword)
	if code != http.StatusOK || !bytes.Contains(key, []byte("BEGIN KEEL DOWNLOAD KEY")) {
		t.Fatalf("GET /api/v1/updates/download-key: %d %s", code, key)
	}
	// The vendor knows the box by its identity key.
	code, idb := API(t, vm, "GET", "/api/v1/updates/identity", TestPassword)
	var id map[string]string
	if err := json.Unmarshal(idb, &id); code != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/updates/identity: %d %s", code, idb)
	}
	reg, _ := json.Marshal(map[string]string{id["serial"]: id["public_key"]})
	if err := os.WriteFile(filepath.Join(srv.dir, "appliances.json"), reg, 0o644); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key.txt")
	os.WriteFile(keyFile, key, 0o644)
	forged := filepath.Join(dir, "forged.txt")
	os.WriteFile(forged, forgeKey(key), 0o644)
	server := fmt.Sprintf("http://127.0.0.1:%d", srv.port)
	if out, err := exec.Command(srv.bin, "redeem", "-server", server, "-key", forged, "-o", filepath.Join(dir, "forged.kbundle")).CombinedOutput(); err == nil || !strings.Contains(string(out), "forged") {
		t.Errorf("a forged key: %v\n%s", err, out)
	} else {
		t.Logf("forged key refused: %s", strings.TrimSpace(string(out)))
	}
	bundlePath := filepath.Join(dir, "box.kbundle")
	out, err := exec.Command(srv.bin, "redeem", "-server", server, "-key", keyFile, "-o", bundlePath).CombinedOutput()
	if err != nil {
		t.Fatalf("image redeem: %v\n%s", err, out)
	}
	t.Logf("redeemed:\n%s", out)

	code, body := upload(t, vm, "", mustRead(t, bundlePath))
	var accepted api.Accepted
	if err := json.Unmarshal(body, &accepted); code != http.StatusAccepted || err != nil {
		t.Fatalf("upload the bundle: %d %s", code, body)
	}
	if _, err := vm.Expect(`keel: reboot`, ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, vm)
	var job api.Job
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(2 * time.Second) {
		code, jb := API(t, vm, "GET", "/api/v1/jobs/"+accepted.Job, TestPassword)
		if code == http.StatusOK {
			json.Unmarshal(jb, &job)
			if job.State != api.JobRunning {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bundle job %s did not finish: %d %s", accepted.Job, code, jb)
		}
	}
	if job.State != "done" {
		t.Fatalf("the bundle job ended %s: %s", job.State, job.Message)
	}
	st := GetStatus(t, vm, TestPassword)
	if st.Base.Version != "1.1.0" || !st.Boot.Committed {
		t.Errorf("after the bundle the base is %s (committed %v)", st.Base.Version, st.Boot.Committed)
	}
	if v, n := demoInfo(t, appPort, false); v != "2.0.0" || n != 1 {
		t.Errorf("after the bundle the demo app runs %q with counter %d; want 2.0.0 and 1", v, n)
	}
	PowerOff(t, vm)
}

// forgeKey alters what a download key says (its installed app version)
// and keeps it well-formed: only the signature can tell.
func forgeKey(key []byte) []byte {
	lines := strings.Split(strings.TrimSpace(string(key)), "\n")
	var body []string
	end := 0
	for i := 1; i < len(lines) && !strings.HasPrefix(lines[i], "-----"); i++ {
		body, end = append(body, lines[i]), i
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(body, ""))
	if err != nil {
		return key
	}
	raw = bytes.Replace(raw, []byte(`"app":"1.0.0"`), []byte(`"app":"0.0.1"`), 1)
	enc := base64.StdEncoding.EncodeToString(raw)
	var wrapped []string
	for len(enc) > 64 {
		wrapped, enc = append(wrapped, enc[:64]), enc[64:]
	}
	wrapped = append(wrapped, enc)
	out := append(append([]string{lines[0]}, wrapped...), lines[end+1:]...)
	return []byte(strings.Join(out, "\n") + "\n")
}
