package vmtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"keel.dev/keel/agent/backup"
	"keel.dev/keel/agent/certs"
	"keel.dev/keel/image/appimage"
	"keel.dev/keel/qemu"
)

// call is one API request with headers of its own.
func call(t *testing.T, vm *qemu.VM, method, path string, header map[string]string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, fmt.Sprintf("https://127.0.0.1:%d%s", vm.HTTPSPort(), path), bytes.NewReader(body))
	req.SetBasicAuth("admin", TestPassword)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := Client()
	c.Timeout = 5 * time.Minute
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// app calls the demo application through its host forward.
func app(t *testing.T, port int, method, path, body string) (int, string) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		req, _ := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), strings.NewReader(body))
		res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res.StatusCode, string(b)
	}
	t.Fatalf("the demo app does not answer %s %s: %v", method, path, last)
	return 0, ""
}

// The guide's hardware move: box A is configured (host name, a static
// address, NTP servers, a CA-signed certificate, app data and history,
// automatic backups), backed up, and powered off; box B, the same image
// on other hardware (AHCI disk, e1000 NIC, another MAC), takes the backup
// (a dry run first, and a wrong password and a damaged file refused with
// nothing changed) and has A's configuration, data and certificate. Then
// an app install on B takes an automatic backup first.
func TestHardwareMove(t *testing.T) {
	e := Require(t)
	t.Parallel()
	srv := e.newRelease(t, "*=0")
	// Base 1.1.0, which demo 1.1.0 (installed at the end) requires.
	img := e.BuildImageApp(t, t.TempDir(), "1.1.0", "1.0.0")
	portA := freeTCPPort(t)
	a := Boot(t, qemu.Config{Image: img, HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", portA, appimage.DemoPort)}})
	WaitReady(t, a)
	Password(t, a)

	setHostname(t, a, "moved-box")
	if code, body := APIBody(t, a, "PUT", "/api/v1/time", TestPassword, `{"servers":["ntp1.example.net","ntp2.example.net"]}`); code != http.StatusOK {
		t.Fatalf("PUT /api/v1/time: %d %s", code, body)
	}
	addStaticAddress(t, a, "10.0.2.50/24")
	_, csr := mustJSON[certs.CSRAnswer](t, a, "POST", "/api/v1/certificates/csr", `{"cn":"moved-box","sans":["moved-box","10.0.2.15"]}`)
	leaf, caPEM, _ := signCSR(t, csr.CSR)
	imp, _ := json.Marshal(certs.Import{CertPEM: leaf + caPEM})
	code, body := APIBody(t, a, "POST", "/api/v1/certificates/import", TestPassword, string(imp))
	var cert certs.Info
	if code != http.StatusCreated || json.Unmarshal(body, &cert) != nil {
		t.Fatalf("import: %d %s", code, body)
	}
	for range 3 {
		app(t, portA, "GET", "/count?inc=1", "")
	}
	if c, b := app(t, portA, "PUT", "/files/note.txt", "MOVED-NOTE"); c != http.StatusNoContent {
		t.Fatalf("PUT /files/note.txt: %d %s", c, b)
	}
	app(t, portA, "POST", "/history", "a session was recorded")
	if code, body := APIBody(t, a, "PUT", "/api/v1/backup/settings", TestPassword, `{"password":"auto-pass-1","keep":3,"daily":false}`); code != http.StatusOK {
		t.Fatalf("backup settings: %d %s", code, body)
	}
	code, file := call(t, a, "POST", "/api/v1/backup", nil, []byte(`{"password":"move-pass-1","include_history":true}`))
	if code != http.StatusOK || !bytes.HasPrefix(file, []byte("age-encryption.org/v1")) {
		t.Fatalf("backup: %d %.200s", code, file)
	}
	backupFile := filepath.Join(t.TempDir(), "a.age")
	os.WriteFile(backupFile, file, 0o600)
	PowerOff(t, a)

	portB := freeTCPPort(t)
	b := Boot(t, qemu.Config{Image: img, DiskBus: "ahci", NIC: "e1000", MAC: "52:54:00:12:34:99",
		HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", portB, appimage.DemoPort)}})
	WaitReady(t, b)
	Password(t, b)
	pw := map[string]string{backup.PasswordHeader: "move-pass-1"}
	flipped := bytes.Clone(file)
	flipped[len(flipped)/2] ^= 1
	for name, c := range map[string]struct {
		header map[string]string
		file   []byte
		want   string
	}{
		"wrong password": {map[string]string{backup.PasswordHeader: "wrong-pass"}, file, "the password does not open this backup"},
		"flipped byte":   {pw, flipped, "damaged"},
		"truncated":      {pw, file[:len(file)/2], "cut short"},
	} {
		if code, body := call(t, b, "POST", "/api/v1/restore", c.header, c.file); code != http.StatusBadRequest || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %d %s", name, code, body)
		}
	}
	if hostname(t, b) == "moved-box" {
		t.Fatal("a refused restore changed the host name")
	}
	code, body = call(t, b, "POST", "/api/v1/restore?dry_run=1", pw, file)
	var dry backup.Plan
	if code != http.StatusOK || json.Unmarshal(body, &dry) != nil || dry.ThisBox {
		t.Fatalf("dry run: %d %s", code, body)
	}
	changes := map[string]string{}
	for _, c := range dry.Changes {
		changes[c.Section] = c.What
	}
	if changes["network"] != "changed" || changes["certificates"] != "added" || changes["app-data:demo"] != "changed" || changes["identity"] != "kept" {
		t.Errorf("dry run changes %v", changes)
	}
	if hostname(t, b) == "moved-box" {
		t.Fatal("the dry run changed the host name")
	}
	code, body = call(t, b, "POST", "/api/v1/restore", pw, file)
	var plan backup.Plan
	if code != http.StatusAccepted || json.Unmarshal(body, &plan) != nil || plan.NetworkConfirmToken == "" {
		t.Fatalf("restore: %d %s", code, body)
	}
	t.Logf("restore notes: %q", plan.Notes)
	if _, err := b.Expect(`keel: the backup was restored`, BootTimeout); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, b)
	if code, body := APIBody(t, b, "POST", "/api/v1/network/confirm", TestPassword, fmt.Sprintf(`{"token":%q}`, plan.NetworkConfirmToken)); code != http.StatusOK {
		t.Fatalf("confirm the restored network: %d %s", code, body)
	}
	if h := hostname(t, b); h != "moved-box" {
		t.Errorf("B's host name after the restore: %q", h)
	}
	code, body = API(t, b, "GET", "/api/v1/network", TestPassword)
	if !strings.Contains(string(body), "10.0.2.50/24") || !strings.Contains(string(body), "ntp1.example.net") {
		t.Errorf("B's network after the restore: %d %s", code, body)
	}
	var list certs.List
	_, body = API(t, b, "GET", "/api/v1/certificates", TestPassword)
	json.Unmarshal(body, &list)
	found := false
	for _, c := range list.Certificates {
		found = found || c.Fingerprint == cert.Fingerprint
	}
	if !found {
		t.Errorf("B lacks A's certificate %s: %s", cert.Fingerprint, body)
	}
	if _, n := demoInfo(t, portB, false); n != 3 {
		t.Errorf("B's app counter %d, A's was 3", n)
	}
	if c, note := app(t, portB, "GET", "/files/note.txt", ""); c != http.StatusOK || note != "MOVED-NOTE" {
		t.Errorf("B's file store: %d %q", c, note)
	}

	// The Backup page reads the same file in a dry run.
	br := newBrowser(t, b)
	br.login(TestPassword)
	br.step("dry-run the backup on the Backup page",
		chromedp.Navigate(br.base+"/backup"), chromedp.WaitVisible(chromedp.CSS("#restore-file")),
		chromedp.SendKeys(chromedp.CSS("#restore-password"), "move-pass-1"),
		chromedp.SetUploadFiles(chromedp.CSS("#restore-file"), []string{backupFile}),
		chromedp.Click(chromedp.CSS("#restore button")), chromedp.WaitVisible(chromedp.CSS("#plan")))
	if src := br.text("#plan-source"); !strings.Contains(src, "(this appliance)") && !strings.Contains(src, "(another appliance)") {
		t.Errorf("the dry run on the page: %q", src)
	}
	br.shot("backup")

	// Backup before upgrade: the settings came with the restore.
	if code, body := upload(t, b, "", mustRead(t, filepath.Join(srv.dir, "packages", "demo-app-1.1.0.kpkg"))); code != http.StatusAccepted {
		t.Fatalf("upload demo 1.1.0: %d %s", code, body)
	}
	var stored struct {
		Backups []backup.Stored `json:"backups"`
	}
	_, body = API(t, b, "GET", "/api/v1/backups", TestPassword)
	if json.Unmarshal(body, &stored) != nil || len(stored.Backups) != 1 || !strings.Contains(stored.Backups[0].Reason, "before the install of app demo 1.1.0") ||
		stored.Backups[0].App == nil || stored.Backups[0].App.Version != "1.0.0" {
		t.Errorf("automatic backups after the install: %s", body)
	}
	PowerOff(t, b)
}

// mustJSON calls the API and decodes its answer.
func mustJSON[T any](t *testing.T, vm *qemu.VM, method, path, body string) (int, T) {
	t.Helper()
	var v T
	code, b := APIBody(t, vm, method, path, TestPassword, body)
	if code >= 300 || json.Unmarshal(b, &v) != nil {
		t.Fatalf("%s %s: %d %s", method, path, code, b)
	}
	return code, v
}

// addStaticAddress adds a static address to the first interface,
// confirming the change when the box asks.
func addStaticAddress(t *testing.T, vm *qemu.VM, cidr string) {
	t.Helper()
	_, body := API(t, vm, "GET", "/api/v1/network", TestPassword)
	var v struct {
		Config map[string]any `json:"config"`
	}
	json.Unmarshal(body, &v)
	ifs := v.Config["interfaces"].([]any)
	first := ifs[0].(map[string]any)
	addrs, _ := first["addresses"].([]any)
	first["addresses"] = append(addrs, map[string]any{"method": "static", "address": cidr, "enabled": true})
	b, _ := json.Marshal(v.Config)
	code, body := APIBody(t, vm, "PUT", "/api/v1/network", TestPassword, string(b))
	switch code {
	case http.StatusOK:
	case http.StatusAccepted:
		var p struct {
			Token string `json:"confirm_token"`
		}
		json.Unmarshal(body, &p)
		if code, body := APIBody(t, vm, "POST", "/api/v1/network/confirm", TestPassword, fmt.Sprintf(`{"token":%q}`, p.Token)); code != http.StatusOK {
			t.Fatalf("confirm: %d %s", code, body)
		}
	default:
		t.Fatalf("PUT /api/v1/network: %d %s", code, body)
	}
}

// The guide's hardware return: markers written into the configuration,
// the app's data and the logs are found nowhere on the disk after a
// secure factory reset that powers the box off; the report is on the
// ESP, and the next boot is a new box's.
func TestHardwareReturn(t *testing.T) {
	e := Require(t)
	t.Parallel()
	port := freeTCPPort(t)
	vm := Boot(t, qemu.Config{Image: e.Image, HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", port, appimage.DemoPort)}})
	WaitReady(t, vm)
	Password(t, vm)
	markers := []string{"marker-host-q7z", "MARKER-APP-q7z", "MARKER-LOG-q7z", "markeruserq7z"}
	setHostname(t, vm, markers[0])
	if c, b := app(t, port, "PUT", "/files/marker.txt", markers[1]); c != http.StatusNoContent {
		t.Fatalf("app file: %d %s", c, b)
	}
	app(t, port, "POST", "/history", markers[2])
	if code, body := APIBody(t, vm, "POST", "/api/v1/users", TestPassword, `{"name":"markeruserq7z","password":"marker-pass-1"}`); code != http.StatusCreated {
		t.Fatalf("add user: %d %s", code, body)
	}
	APIBody(t, vm, "POST", "/api/v1/users/markeruserq7z/disable", TestPassword, "") // in the audit log
	serial := GetStatus(t, vm, TestPassword).Serial
	// Write zeroes is quick on a virtual disk: a slow one keeps the wipe
	// going long enough to cut the power in its middle.
	if err := vm.ThrottleWrites(8 << 20); err != nil {
		t.Fatal(err)
	}
	if code, body := APIBody(t, vm, "POST", "/api/v1/factory-reset", TestPassword, `{"mode":"secure","then":"poweroff","confirm":"wrong"}`); code != http.StatusBadRequest {
		t.Fatalf("a reset without the serial: %d %s", code, body)
	}
	if code, body := APIBody(t, vm, "POST", "/api/v1/factory-reset", TestPassword, fmt.Sprintf(`{"mode":"secure","then":"poweroff","confirm":%q}`, serial)); code != http.StatusAccepted {
		t.Fatalf("factory reset: %d %s", code, body)
	}
	if _, err := vm.Expect(`NIST SP 800-88 Clear[^\n]*`, 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(5 * time.Minute); err != nil {
		t.Fatalf("the box did not power off after the reset: %v", err)
	}
	raw := RawDisk(t, vm)
	for _, m := range markers {
		if at := findInFile(t, raw, []byte(m)); at >= 0 {
			t.Errorf("%q is still on the disk at byte %d", m, at)
		}
	}
	// Powered on again it is a new box: a new first-boot password, only
	// the admin account, the default host name, and the report.
	nvm := Restart(t, vm)
	WaitReady(t, nvm)
	if FirstPassword(nvm) == "" {
		t.Fatal("no new first-boot password after the reset")
	}
	Password(t, nvm)
	if h := hostname(t, nvm); h == markers[0] {
		t.Errorf("host name %q after the reset", h)
	}
	code, body := API(t, nvm, "GET", "/api/v1/users", TestPassword)
	if code != http.StatusOK || strings.Contains(string(body), "markeruserq7z") {
		t.Errorf("users after the reset: %d %s", code, body)
	}
	code, body = API(t, nvm, "GET", "/api/v1/factory-reset/report", TestPassword)
	if code != http.StatusOK || !strings.Contains(string(body), `"level":"Clear"`) {
		t.Errorf("report: %d %s", code, body)
	}
	PowerOff(t, nvm)
}

// findInFile is the offset of needle in the file, or -1.
func findInFile(t *testing.T, path string, needle []byte) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 8<<20)
	keep := len(needle) - 1
	var off int64
	carry := 0
	for {
		n, err := f.Read(buf[carry:])
		if n > 0 {
			if i := bytes.Index(buf[:carry+n], needle); i >= 0 {
				return off - int64(carry) + int64(i)
			}
			total := carry + n
			if total > keep {
				copy(buf, buf[total-keep:total])
				carry = keep
			} else {
				carry = total
			}
			off += int64(n)
		}
		if err != nil {
			return -1
		}
	}
}

// A power cut in the middle of a factory reset: the next boot finishes
// the reset (never the old configuration), says it resumed, and boots as
// a new box.
func TestResetFinishesAfterAPowerCut(t *testing.T) {
	e := Require(t)
	t.Parallel()
	vm := Boot(t, qemu.Config{Image: e.Image})
	WaitReady(t, vm)
	Password(t, vm)
	setHostname(t, vm, "before-reset")
	serial := GetStatus(t, vm, TestPassword).Serial
	// Write zeroes is quick on a virtual disk: a slow one keeps the wipe
	// going long enough to cut the power in its middle.
	if err := vm.ThrottleWrites(8 << 20); err != nil {
		t.Fatal(err)
	}
	if code, body := APIBody(t, vm, "POST", "/api/v1/factory-reset", TestPassword, fmt.Sprintf(`{"mode":"secure","then":"reboot","confirm":%q}`, serial)); code != http.StatusAccepted {
		t.Fatalf("factory reset: %d %s", code, body)
	}
	if _, err := vm.Expect(`factory reset \(secure\) in progress`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Expect(`factory reset: [1-9][0-9]?%`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := vm.PowerCut(); err != nil {
		t.Fatal(err)
	}
	nvm := Restart(t, vm)
	if _, err := nvm.Expect(`factory reset \(secure\) finished[^\n]*finished after a power cut`, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, nvm)
	if FirstPassword(nvm) == "" {
		t.Fatal("no first-boot password after the resumed reset")
	}
	Password(t, nvm)
	if h := hostname(t, nvm); h == "before-reset" {
		t.Fatal("the old configuration came back")
	}
	PowerOff(t, nvm)
}
