package vmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"keel.dev/keel/agent/apps"
	"keel.dev/keel/agent/inventory"
	"keel.dev/keel/agent/updates"
	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/qemu"
)

// repoRoot is the module's root: go test runs a package's tests in its
// folder, qemu/vmtest.
const repoRoot = "../.."

// BuildImageApp is BuildImage with the demo app of appVersion in app-a.
func (e Env) BuildImageApp(t testing.TB, dir, version, appVersion string) string {
	t.Helper()
	app := filepath.Join(dir, "app.squashfs")
	if err := appimage.DemoCached(app, appVersion, filepath.Join(repoRoot, "build", "cache", "demoapp")); err != nil {
		t.Fatal(err)
	}
	return e.buildImage(t, dir, diskimage.Options{Version: version, AppPayload: app})
}

// updateServer is a release folder served by `image serve` on host
// loopback, which the guest reaches at 10.0.2.2 (HostLoopback).
type updateServer struct {
	dir, bin string
	port     int
}

// newRelease builds the demo release (`image release`) with the given
// -wait overrides and serves it.
func (e Env) newRelease(t *testing.T, waits ...string) *updateServer {
	t.Helper()
	keyFile := VendorKey(t)
	s := &updateServer{dir: filepath.Join(t.TempDir(), "release"), bin: filepath.Join(t.TempDir(), "image")}
	build := exec.Command("go", "build", "-o", s.bin, "./image")
	build.Dir = repoRoot
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the image command: %v: %s", err, b)
	}
	args := []string{"release", "-dir", s.dir, "-key", keyFile, "-kernel-dir", e.KernelDir, "-initramfs", e.Initramfs}
	for _, w := range waits {
		args = append(args, "-wait", w)
	}
	if b, err := exec.Command(s.bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("image release: %v: %s", err, b)
	}
	s.port = freeTCPPort(t)
	srv := exec.Command(s.bin, "serve", "-dir", s.dir, "-addr", fmt.Sprintf("127.0.0.1:%d", s.port),
		"-trusted", filepath.Join(filepath.Dir(keyFile), "vendor.pub"))
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("image serve did not start listening")
		}
	}
	return s
}

// guestURL is the server's address as the guest sees it.
func (s *updateServer) guestURL() string { return fmt.Sprintf("http://10.0.2.2:%d", s.port) }

// find is the update name version in the listing.
func find(l updates.Listing, name, version string) (u catalog.Update, found bool) {
	for _, u := range l.Updates {
		if u.Name == name && u.Version.String() == version {
			return u, true
		}
	}
	return catalog.Update{}, false
}

func checkUpdates(t *testing.T, vm *qemu.VM) updates.Listing {
	t.Helper()
	code, body := API(t, vm, "POST", "/api/v1/updates/check", TestPassword)
	if code != http.StatusOK {
		t.Fatalf("POST /api/v1/updates/check: %d %s", code, body)
	}
	var l updates.Listing
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	return l
}

// installUpdate asks the box to download and install an update; a failing
// app update answers only after its health check timed out.
func installUpdate(t *testing.T, vm *qemu.VM, body string) (int, string) {
	t.Helper()
	code, b, err := request(vm.HTTPSPort(), "POST", "/api/v1/updates/install", TestPassword, strings.NewReader(body), 5*time.Minute)
	if err != nil {
		t.Fatalf("POST /api/v1/updates/install %s: %v", body, err)
	}
	return code, string(b)
}

// demoInfo reads the demo app's version and counter through the host
// forward of its port.
func demoInfo(t *testing.T, port int, inc bool) (version string, counter int64) {
	t.Helper()
	path := "/api/info"
	if inc {
		path = "/count?inc=1"
	}
	var last error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = fmt.Errorf("%s: %s", resp.Status, b)
			continue
		}
		if inc {
			return "", 0
		}
		var v struct {
			Version string `json:"version"`
			Counter int64  `json:"counter"`
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("demo app %s: %v: %s", path, err, b)
		}
		return v.Version, v.Counter
	}
	t.Fatalf("the demo app does not answer %s: %v", path, last)
	return "", 0
}

// demoUname is what the demo app's `uname -r` printed on the box, or the
// error it answered with.
func demoUname(t *testing.T, port int) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/api/uname", port))
	if err != nil {
		t.Fatalf("demo app /api/uname: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b))
}

// The vendor guide's path, online: a box at base 1.0.0 with app 1.0.0
// checks the update server and sees base 1.1.0 and app 1.0.1 installable,
// app 1.1.0 waiting for the base and 2.0.0 for app 1.1.0; installs the
// base (a reboot); then app 1.1.0, held by its wait until ignore_wait, and
// 2.0.0 (no reboot); then 2.0.1, which fails its health check and is
// rolled back without a reboot. The demo app's counter survives it all.
func TestUpdatesFromServerInVendorOrder(t *testing.T) {
	e := Require(t)
	t.Parallel()
	srv := e.newRelease(t, "*=0", "1.1.0=24h")
	img := e.BuildImageApp(t, t.TempDir(), "1.0.0", "1.0.0")
	appPort := freeTCPPort(t)
	vm := Boot(t, qemu.Config{Image: img, HostLoopback: true, HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", appPort, appimage.DemoPort)}})
	WaitReady(t, vm)
	if v, _ := demoInfo(t, appPort, false); v != "1.0.0" {
		t.Fatalf("the demo app runs %q, want 1.0.0", v)
	}
	// The base's tools, which the image builder moved out of the
	// initramfs into the slot, are on the application's PATH.
	release := strings.TrimSpace(string(mustRead(t, filepath.Join(e.KernelDir, "version"))))
	if got := demoUname(t, appPort); got != release {
		t.Errorf("the demo app's uname -r says %q, want %q", got, release)
	}
	for i := 0; i < 3; i++ {
		demoInfo(t, appPort, true)
	}

	if code, body := APIBody(t, vm, "PUT", "/api/v1/updates/config", TestPassword, fmt.Sprintf(`{"server":%q}`, srv.guestURL())); code != http.StatusOK {
		t.Fatalf("PUT /api/v1/updates/config: %d %s", code, body)
	}
	l := checkUpdates(t, vm)
	for _, c := range []struct{ name, version, blockedBy string }{
		{"keel", "1.1.0", ""}, {"demo", "1.0.1", ""},
		{"demo", "1.1.0", "requires base >= 1.1.0; installed 1.0.0"},
		{"demo", "2.0.0", "requires app >= 1.1.0; installed 1.0.0"},
	} {
		u, found := find(l, c.name, c.version)
		if !found || u.Installable != (c.blockedBy == "") || !strings.Contains(u.Reason, c.blockedBy) {
			t.Errorf("%s %s: found %v, installable %v, reason %q; want blocked by %q", c.name, c.version, found, u.Installable, u.Reason, c.blockedBy)
		}
	}
	if code, body := installUpdate(t, vm, `{"name":"demo","version":"1.1.0"}`); code != http.StatusConflict || !strings.Contains(body, "requires base >= 1.1.0") {
		t.Errorf("installing a blocked update: %d %s", code, body)
	}

	if code, body := installUpdate(t, vm, `{"name":"keel","version":"1.1.0"}`); code != http.StatusAccepted {
		t.Fatalf("install base 1.1.0: %d %s", code, body)
	}
	if _, err := vm.Expect(`keel: reboot`, ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
	WaitReady(t, vm)
	if st := GetStatus(t, vm, TestPassword); st.Base.Version != "1.1.0" || !st.Boot.Committed {
		t.Fatalf("after the base update: %+v", st)
	}
	if u, _ := find(checkUpdates(t, vm), "demo", "1.1.0"); !u.Installable {
		t.Fatalf("after the base update demo 1.1.0 is not installable: %s", u.Reason)
	}
	if code, body := installUpdate(t, vm, `{"name":"demo","version":"1.1.0"}`); code != http.StatusAccepted {
		t.Fatalf("install demo 1.1.0: %d %s", code, body)
	}
	// 1.1.0 asks for 24 hours before the next app package.
	if u, _ := find(checkUpdates(t, vm), "demo", "2.0.0"); u.Installable || !strings.Contains(u.Reason, "installable at") {
		t.Errorf("right after 1.1.0, 2.0.0: installable %v, %q; want held by the wait", u.Installable, u.Reason)
	}
	if code, body := installUpdate(t, vm, `{"name":"demo","version":"2.0.0"}`); code != http.StatusConflict {
		t.Errorf("install 2.0.0 during the wait: %d %s", code, body)
	}
	if code, body := installUpdate(t, vm, `{"name":"demo","version":"2.0.0","ignore_wait":true}`); code != http.StatusAccepted {
		t.Fatalf("install demo 2.0.0 with ignore_wait: %d %s", code, body)
	}
	if v, n := demoInfo(t, appPort, false); v != "2.0.0" || n != 3 {
		t.Fatalf("after 2.0.0 the demo app runs %q with counter %d; want 2.0.0 and 3", v, n)
	}
	// And so are those of the installed base package's slot.
	if got := demoUname(t, appPort); got != release {
		t.Errorf("on base 1.1.0 the demo app's uname -r says %q, want %q", got, release)
	}
	code, body := installUpdate(t, vm, `{"name":"demo","version":"2.0.1","ignore_wait":true}`)
	if code != http.StatusUnprocessableEntity || !strings.Contains(body, "health check") || !strings.Contains(body, "back on 2.0.0") {
		t.Fatalf("install the broken 2.0.1: %d %s", code, body)
	}
	if v, n := demoInfo(t, appPort, false); v != "2.0.0" || n != 3 {
		t.Fatalf("after the rollback the demo app runs %q with counter %d; want 2.0.0 and 3", v, n)
	}
	if n := strings.Count(vm.Output(), "keel: reboot"); n != 1 {
		t.Errorf("the box rebooted %d times; only the base update needs a reboot", n)
	}
	PowerOff(t, vm)
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// cuttingProxy forwards HTTP requests to the update server and breaks the
// first package download off at half the package, as a flaky line would.
// It counts the package bytes it passes on.
type cuttingProxy struct {
	upstream string // the server's base URL
	port     int
	srv      *http.Server
	cut      atomic.Bool
	bytes    atomic.Int64
}

func newCuttingProxy(t *testing.T, upstreamPort int) *cuttingProxy {
	t.Helper()
	p := &cuttingProxy{upstream: fmt.Sprintf("http://127.0.0.1:%d", upstreamPort)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	p.srv = &http.Server{Handler: p}
	go p.srv.Serve(l)
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *cuttingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), nil)
	for _, h := range []string{"Range", "If-Range"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	pkg := strings.HasPrefix(r.URL.Path, "/packages/")
	var body io.Reader = resp.Body
	cut := pkg && resp.ContentLength > 0 && p.cut.CompareAndSwap(false, true)
	if cut {
		body = io.LimitReader(resp.Body, resp.ContentLength/2)
	}
	n, _ := io.Copy(w, body)
	if pkg {
		p.bytes.Add(n)
	}
	if cut {
		http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler) // the connection drops mid-body
	}
}

// A download broken off in the middle resumes where it stopped, and the
// install completes with the right slot content. A catalog that does not
// verify and a server that is down are refused with a sentence, and the
// listing stays as it was.
func TestUpdateResumesAndRefusals(t *testing.T) {
	e := Require(t)
	t.Parallel()
	srv := e.newRelease(t, "*=0")
	proxy := newCuttingProxy(t, srv.port)
	img := e.BuildImageApp(t, t.TempDir(), "1.0.0", "1.0.0")
	appPort := freeTCPPort(t)
	vm := Boot(t, qemu.Config{Image: img, HostLoopback: true, HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", appPort, appimage.DemoPort)}})
	WaitReady(t, vm)
	if code, body := APIBody(t, vm, "PUT", "/api/v1/updates/config", TestPassword, fmt.Sprintf(`{"server":"http://10.0.2.2:%d"}`, proxy.port)); code != http.StatusOK {
		t.Fatalf("PUT /api/v1/updates/config: %d %s", code, body)
	}
	checkUpdates(t, vm)
	code, body := installUpdate(t, vm, `{"name":"demo","version":"1.0.1"}`)
	if code != http.StatusAccepted || !strings.Contains(body, "resumed 1 time") {
		t.Fatalf("install across a dropped download: %d %s", code, body)
	}
	size := packageSize(t, srv.dir, "demo", "1.0.1")
	t.Logf("%s; %d package bytes passed for a %d-byte package (%.3fx)", body, proxy.bytes.Load(), size, float64(proxy.bytes.Load())/float64(size))
	if r := float64(proxy.bytes.Load()) / float64(size); r > 1.05 {
		t.Errorf("the resumed download fetched %.2fx the package", r)
	}
	if v, _ := demoInfo(t, appPort, false); v != "1.0.1" {
		t.Fatalf("after the resumed install the demo app runs %q", v)
	}

	// The listing the refused checks must leave as it is.
	mid := updatesNow(t, vm)
	var l updates.Listing
	if err := json.Unmarshal(mid, &l); err != nil {
		t.Fatalf("GET /api/v1/updates: %v: %s", err, mid)
	}
	if _, found := find(l, "demo", "2.0.0"); !found {
		t.Fatalf("the listing before the refused checks lacks demo 2.0.0: %s", mid)
	}
	// A catalog changed after signing.
	cj := filepath.Join(srv.dir, "catalog.json")
	orig, err := os.ReadFile(cj)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cj, []byte(strings.Replace(string(orig), `"2.0.0"`, `"2.0.9"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, b := API(t, vm, "POST", "/api/v1/updates/check", TestPassword)
	if code != http.StatusBadGateway || !strings.Contains(string(b), "signature") {
		t.Errorf("a tampered catalog: %d %s", code, b)
	}
	if after := updatesNow(t, vm); !sameJSONField(t, mid, after, "updates") {
		t.Errorf("after the tampered catalog the updates are\n%s\nwant\n%s", after, mid)
	}
	if err := os.WriteFile(cj, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	// The server is gone.
	proxy.srv.Close()
	code, b = API(t, vm, "POST", "/api/v1/updates/check", TestPassword)
	if code != http.StatusBadGateway || !strings.Contains(string(b), "did not answer") {
		t.Errorf("the update server down: %d %s", code, b)
	}
	if after := updatesNow(t, vm); !sameJSONField(t, mid, after, "updates") {
		t.Errorf("after the check with the server down the updates are\n%s\nwant\n%s", after, mid)
	}
	PowerOff(t, vm)
}

// updatesNow is GET /api/v1/updates.
func updatesNow(t *testing.T, vm *qemu.VM) []byte {
	t.Helper()
	code, b := API(t, vm, "GET", "/api/v1/updates", TestPassword)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/updates: %d %s", code, b)
	}
	return b
}

// packageSize is the size of a package file of the release.
func packageSize(t *testing.T, dir, name, version string) int64 {
	t.Helper()
	ms, _ := filepath.Glob(filepath.Join(dir, "packages", "*"+name+"*"+version+"*.kpkg"))
	if len(ms) != 1 {
		t.Fatalf("package %s %s in %s: %v", name, version, dir, ms)
	}
	fi, err := os.Stat(ms[0])
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// The wait a package asks for holds however it came: app 1.1.0, which
// asks for 24 hours before the next app package, uploaded by hand
// (POST /api/v1/install), holds 2.0.0 in the online listing until then,
// and the inventory says how 1.1.0 came.
func TestUploadedAppHoldsTheWait(t *testing.T) {
	e := Require(t)
	t.Parallel()
	srv := e.newRelease(t, "*=0", "1.1.0=24h")
	img := e.BuildImageApp(t, t.TempDir(), "1.1.0", "1.0.0")
	vm := Boot(t, qemu.Config{Image: img, HostLoopback: true})
	WaitReady(t, vm)
	before := time.Now()
	// The operator uploads it on the Support page and watches both bars.
	br := newBrowser(t, vm)
	br.login(TestPassword)
	br.step("upload demo 1.1.0 on Support",
		chromedp.Navigate(br.base+"/support"), chromedp.WaitVisible(chromedp.CSS("#package")),
		chromedp.SetUploadFiles(chromedp.CSS("#package"), []string{filepath.Join(srv.dir, "packages", "demo-app-1.1.0.kpkg")}),
		chromedp.Click(chromedp.CSS("#upload button")), chromedp.WaitVisible(chromedp.CSS("#progress")))
	var seen []float64
	for deadline := time.Now().Add(2 * time.Minute); ; {
		v, err := chromedp.Run(br.ctx, chromedp.Evaluate[float64](`document.getElementById("install-bar").value`))
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != v {
			seen = append(seen, v)
		}
		st, _ := chromedp.Run(br.ctx, chromedp.Evaluate[string](`document.getElementById("install-state").dataset.state`))
		if st == "done" || st == "failed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	state := br.text("#install-state")
	// The bar and the state change together; read the bar once more now
	// that the state said how it ended.
	if v, _ := chromedp.Run(br.ctx, chromedp.Evaluate[float64](`document.getElementById("install-bar").value`)); v != seen[len(seen)-1] {
		seen = append(seen, v)
	}
	up, _ := chromedp.Run(br.ctx, chromedp.Evaluate[float64](`document.getElementById("upload-bar").value`))
	br.shot("support-install")
	if !strings.HasPrefix(state, "done") || seen[len(seen)-1] != 1 || up != 1 {
		t.Fatalf("the install's progress: %q, install bar went %v, upload bar %v", state, seen, up)
	}
	t.Logf("install bar: %v", seen)
	if code, body := APIBody(t, vm, "PUT", "/api/v1/updates/config", TestPassword, fmt.Sprintf(`{"server":%q}`, srv.guestURL())); code != http.StatusOK {
		t.Fatalf("PUT /api/v1/updates/config: %d %s", code, body)
	}
	code, body := API(t, vm, "POST", "/api/v1/updates/check", TestPassword)
	var l updates.Listing
	if err := json.Unmarshal(body, &l); code != http.StatusOK || err != nil {
		t.Fatalf("check: %d %v %s", code, err, body)
	}
	held, found := find(l, "demo", "2.0.0")
	// The box's clock is its own; allow for its offset from the host's.
	if !found || held.Installable || !strings.Contains(held.Reason, "installable at") ||
		held.InstallableAt.Before(before.Add(23*time.Hour)) || held.InstallableAt.After(time.Now().Add(25*time.Hour)) {
		t.Errorf("after uploading 1.1.0, demo 2.0.0 is %+v; want held by the 24 h wait with installable_at", held)
	}
	code, body = API(t, vm, "GET", "/api/v1/inventory", TestPassword)
	var inv inventory.Report
	if err := json.Unmarshal(body, &inv); code != http.StatusOK || err != nil {
		t.Fatalf("inventory: %d %v %s", code, err, body)
	}
	if len(inv.History) == 0 || inv.History[0].Via != inventory.Upload || inv.History[0].Version.String() != "1.1.0" {
		t.Errorf("inventory history %+v", inv.History)
	}
	if l.Catalog == nil || l.Catalog.Version == 0 || l.Catalog.Expires.IsZero() {
		t.Errorf("the listing does not describe its catalog: %+v", l.Catalog)
	}
	// The uploaded app runs confined: its own root, a cgroup v2 whose
	// limits the box's kernel enforces, and a data volume of half the
	// data partition (which the image makes about 447 MiB).
	var app apps.Status
	if err := json.Unmarshal(GetStatus(t, vm, TestPassword).App, &app); err != nil {
		t.Fatal(err)
	}
	if c := app.Confinement; app.Version != "1.1.0" || c == nil || c.Root != "/run/keel/sandbox/demo" || c.Cgroup != "/sys/fs/cgroup/keel-apps/demo" || len(c.Unenforced) != 0 || len(c.Ports) == 0 {
		t.Errorf("app %s confinement %+v", app.Version, app.Confinement)
	}
	if c := app.Confinement; c == nil || c.Data == nil || c.Data.Limit < 150<<20 || c.Data.Limit > 300<<20 || c.Data.Used <= 0 || c.Data.Used > c.Data.Limit {
		t.Errorf("app data volume %+v", c)
	}
	br.step("see the held update on Support", chromedp.Navigate(br.base+"/support"), chromedp.WaitVisible(chromedp.CSS("#updates")))
	if list := br.text("#updates"); !strings.Contains(list, "2.0.0") || !strings.Contains(list, "installable at") {
		t.Errorf("the Support page's update list: %q", list)
	}
	br.shot("support")
	PowerOff(t, vm)
}
