package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

const appSlotSize = 4 << 20

// appEnv is env with two application slot files and a fake application
// runtime: slot a runs demo 1.0.0.
type appEnv struct {
	*env
	appSlot  map[layout.Label]string // slot -> file
	app      map[kpkg.Kind]kpkg.Version
	switches []string // "slot version"
	switchTo func(slot layout.Label, version string) error
	open     atomic.Int32 // app slot devices open now
}

func newAppEnv(t *testing.T) *appEnv {
	t.Helper()
	e := &appEnv{env: newEnv(t), appSlot: map[layout.Label]string{}}
	dir := t.TempDir()
	e.in.AppSlots = slots.NewAppStore(filepath.Join(dir, "apps.json"))
	if _, err := e.in.AppSlots.Commit("a", "demo", "1.0.0", ""); err != nil {
		t.Fatal(err)
	}
	for _, s := range layout.Labels {
		e.appSlot[s] = filepath.Join(dir, "app-"+string(s))
		if err := os.WriteFile(e.appSlot[s], bytes.Repeat([]byte{0xAA, byte(s[0])}, appSlotSize/2), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.app = map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.1.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")}
	e.in.Installed = func() map[kpkg.Kind]kpkg.Version { return e.app }
	e.in.OpenAppSlot = func(slot layout.Label) (Device, int64, error) {
		f, err := os.OpenFile(e.appSlot[slot], os.O_RDWR, 0)
		if err != nil {
			return nil, 0, err
		}
		e.open.Add(1)
		return &countedDevice{Device: f, open: &e.open}, appSlotSize, nil
	}
	// The runtime's part of the switch, as apps.Manager does it.
	e.in.SwitchApp = func(ctx context.Context, slot layout.Label, version string) error {
		if n := e.open.Load(); n != 0 {
			t.Errorf("%d application slot devices are open during the switch: it mounts the slot", n)
		}
		if ctx.Err() != nil {
			t.Errorf("the switch got a cancelled context")
		}
		e.switches = append(e.switches, string(slot)+" "+version)
		if _, err := e.in.AppSlots.StageTrial(slot, version); err != nil {
			return err
		}
		if e.switchTo != nil {
			if err := e.switchTo(slot, version); err != nil {
				e.in.AppSlots.MarkBad(slot, "demo", version, err.Error())
				return err
			}
		}
		_, err := e.in.AppSlots.Commit(slot, "demo", version, "")
		return err
	}
	return e
}

type countedDevice struct {
	Device
	open   *atomic.Int32
	closed bool
}

func (d *countedDevice) Close() error {
	if !d.closed {
		d.closed = true
		d.open.Add(-1)
	}
	return d.Device.Close()
}

func appManifest(version string) kpkg.Manifest {
	return kpkg.Manifest{Kind: kpkg.KindApp, Name: "demo", Version: kpkg.MustParseVersion(version), Hardware: []string{model}}
}

// noApp empties the application state: no application is installed.
func (e *appEnv) noApp() {
	e.t.Helper()
	e.in.AppSlots = slots.NewAppStore(filepath.Join(e.t.TempDir(), "apps.json"))
	delete(e.app, kpkg.KindApp)
}

func (e *appEnv) appPrefix(slot layout.Label, n int) []byte {
	e.t.Helper()
	b, err := os.ReadFile(e.appSlot[slot])
	if err != nil {
		e.t.Fatal(err)
	}
	return b[:n]
}

// appSums hashes both application slots.
func (e *appEnv) appSums() map[layout.Label][32]byte {
	e.t.Helper()
	out := map[layout.Label][32]byte{}
	for s, p := range e.appSlot {
		b, err := os.ReadFile(p)
		if err != nil {
			e.t.Fatal(err)
		}
		out[s] = sha256.Sum256(b)
	}
	return out
}

func TestAppInstallSwitchesWithoutReboot(t *testing.T) {
	e := newAppEnv(t)
	data := payload(1<<20+77, 3)
	pkg := build(t, appManifest("1.1.0"), data, vendorKey)
	before := e.snapshot() // base slots and boot state
	slotA := e.appPrefix("a", appSlotSize)

	j, err := e.in.Start(context.Background(), bytes.NewReader(pkg), Options{Size: int64(len(pkg))})
	if err != nil {
		t.Fatal(err)
	}
	s := j.Status()
	if s.State != Done || s.Message != "app demo 1.1.0 is running" || s.Slot != "b" || s.Package != "app" || s.Progress != 1 || s.Version != "1.1.0" {
		t.Errorf("job %+v", s)
	}
	if !bytes.Equal(e.appPrefix("b", len(data)), data) {
		t.Error("application slot b does not hold the payload")
	}
	if !bytes.Equal(e.appPrefix("a", appSlotSize), slotA) {
		t.Error("the running application slot a was written")
	}
	if strings.Join(e.switches, ",") != "b 1.1.0" {
		t.Errorf("switches %v", e.switches)
	}
	e.assertUnchanged(before)
	if e.reboots.Load() != 0 || e.in.rebooting.Load() {
		t.Error("an app install rebooted")
	}
	// Base installs are unaffected, and mark their job as base.
	j, err = e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(4096, 0), vendorKey)), Options{RebootLater: true})
	if err != nil || j.Status().Package != "base" {
		t.Errorf("base install after an app install: %v %+v", err, j.Status())
	}
}

// Tries is a base package's setting: a bad one refuses base installs,
// before anything is written, and not app installs.
func TestAppInstallDoesNotNeedTries(t *testing.T) {
	e := newAppEnv(t)
	e.in.Tries = bootstate.MaxTries + 1
	if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("1.1.0"), payload(4096, 3), vendorKey)), Options{}); err != nil {
		t.Fatalf("app install: %v", err)
	}
	before := e.snapshot()
	j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(4096, 0), vendorKey)), Options{RebootLater: true})
	if j != nil || !errors.Is(err, ErrSystem) || !strings.Contains(err.Error(), "trial boots") {
		t.Errorf("base install with bad tries: %v", err)
	}
	e.assertUnchanged(before)
}

func TestAppInstallOnABoxWithoutApplication(t *testing.T) {
	e := newAppEnv(t)
	e.noApp()
	data := payload(5000, 4)
	j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("0.0.1"), data, vendorKey)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if j.Status().Slot != "a" || !bytes.Equal(e.appPrefix("a", len(data)), data) || strings.Join(e.switches, ",") != "a 0.0.1" {
		t.Errorf("job %+v, switches %v", j.Status(), e.switches)
	}
}

func TestAppRolledBack(t *testing.T) {
	e := newAppEnv(t)
	const why = "app 2.0.1 failed its health check (GET http://127.0.0.1:8080/healthz answered 500 Internal Server Error, not 200); back on 1.0.0"
	e.switchTo = func(layout.Label, string) error { return errors.New(why) }
	data := payload(70000, 5)
	j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("2.0.1"), data, vendorKey)), Options{})
	if err == nil || err.Error() != why || !errors.Is(err, ErrAppFailed) || HTTPStatus(err) != http.StatusUnprocessableEntity {
		t.Fatalf("error %v (%d)", err, HTTPStatus(err))
	}
	if j == nil || j.Status().State != Failed || j.Status().Message != why {
		t.Fatalf("job %+v", j)
	}
	if !bytes.Equal(e.appPrefix("b", len(data)), data) {
		t.Error("the payload was not written")
	}
	// Nothing is pending: the next version installs.
	e.switchTo = nil
	if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("2.0.2"), data, vendorKey)), Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestAppRefusedBeforeAnyWrite(t *testing.T) {
	data := payload(10000, 6)
	withManifest := func(f func(*kpkg.Manifest)) []byte {
		m := appManifest("1.1.0")
		f(&m)
		return build(t, m, data, vendorKey)
	}
	req := func(s string) []kpkg.Requirement {
		r, err := kpkg.ParseRequirement(s)
		if err != nil {
			t.Fatal(err)
		}
		return []kpkg.Requirement{r}
	}
	for _, c := range []struct {
		name   string
		pkg    []byte
		status int
		want   string
	}{
		{"older", build(t, appManifest("0.9.0"), data, vendorKey), 409, "0.9.0 is older than the installed 1.0.0; use allow_downgrade to downgrade"},
		{"same", build(t, appManifest("1.0.0"), data, vendorKey), 409, "1.0.0 is already installed"},
		{"unknown key", build(t, appManifest("1.1.0"), data, otherKey), 403, "unknown key"},
		{"hardware", withManifest(func(m *kpkg.Manifest) { m.Hardware = []string{"kx-900"} }), 422, `is for hardware "kx-900"`},
		{"intermediate app version", withManifest(func(m *kpkg.Manifest) { m.Requires = req("app >= 1.0.5") }), 422, "requires app >= 1.0.5; installed 1.0.0"},
		{"newer base", withManifest(func(m *kpkg.Manifest) { m.Requires = req("base >= 2.0.0") }), 422, "requires base >= 2.0.0; installed 1.1.0"},
		{"larger than the slot", build(t, appManifest("1.1.0"), payload(appSlotSize+1, 1), vendorKey), 422, "application slot b holds only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newAppEnv(t)
			before, apps := e.snapshot(), e.appSums()
			j, err := e.in.Start(context.Background(), bytes.NewReader(c.pkg), Options{})
			if err == nil || j != nil {
				t.Fatalf("installed: job %v", j)
			}
			if HTTPStatus(err) != c.status || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%d %v", HTTPStatus(err), err)
			}
			e.assertUnchanged(before)
			if now := e.appSums(); now["a"] != apps["a"] || now["b"] != apps["b"] {
				t.Error("an application slot was written")
			}
			if len(e.switches) != 0 || e.open.Load() != 0 {
				t.Errorf("switches %v, open devices %d", e.switches, e.open.Load())
			}
		})
	}
	t.Run("force downgrade", func(t *testing.T) {
		e := newAppEnv(t)
		if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("0.9.0"), data, vendorKey)), Options{AllowDowngrade: true}); err != nil {
			t.Fatal(err)
		}
		if strings.Join(e.switches, ",") != "b 0.9.0" {
			t.Errorf("switches %v", e.switches)
		}
	})
	t.Run("a requirement on an app when none is installed", func(t *testing.T) {
		e := newAppEnv(t)
		e.noApp()
		_, err := e.in.Start(context.Background(), bytes.NewReader(withManifest(func(m *kpkg.Manifest) { m.Requires = req("app >= 1.0.0") })), Options{})
		if HTTPStatus(err) != 422 || !strings.Contains(err.Error(), "no app is installed") {
			t.Errorf("%v", err)
		}
	})
}

func TestAppSlotFailures(t *testing.T) {
	for _, c := range []struct {
		name string
		dev  brokenDevice
		want string
	}{
		{"write error", brokenDevice{failWrite: true}, "application slot b: input/output error; the application keeps running from application slot a"},
		{"read-back mismatch", brokenDevice{corrupt: true}, "application slot b: MiB 2 reads back differently from what was written: the disk may be failing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newAppEnv(t)
			open := e.in.OpenAppSlot
			e.in.OpenAppSlot = func(slot layout.Label) (Device, int64, error) {
				d, n, err := open(slot)
				dev := c.dev
				dev.Device = d
				return &dev, n, err
			}
			j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("1.1.0"), payload(3<<20, 7), vendorKey)), Options{})
			if !errors.Is(err, ErrSystem) || HTTPStatus(err) != 500 || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v", err)
			}
			if j == nil || j.Status().State != Failed || len(e.switches) != 0 || e.open.Load() != 0 {
				t.Errorf("job %+v, switches %v, open %d", j, e.switches, e.open.Load())
			}
		})
	}
	t.Run("slot cannot be opened", func(t *testing.T) {
		e := newAppEnv(t)
		e.in.OpenAppSlot = func(layout.Label) (Device, int64, error) { return nil, 0, errors.New("device or resource busy") }
		_, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("1.1.0"), payload(100, 7), vendorKey)), Options{})
		if HTTPStatus(err) != 500 || err.Error() != "application slot b cannot be opened, so nothing was written: device or resource busy" {
			t.Errorf("%v", err)
		}
	})
}

func TestHTTPAppInstall(t *testing.T) {
	e := newAppEnv(t)
	ts := serve(t, e.env)
	var a answer
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(build(t, appManifest("1.1.0"), payload(9000, 1), vendorKey)), &a); code != http.StatusAccepted || a.Message != "app demo 1.1.0 is running" {
		t.Errorf("%d %+v", code, a)
	}
	e.switchTo = func(layout.Label, string) error {
		return errors.New("app 1.2.0 failed its health check (x); back on 1.1.0")
	}
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(build(t, appManifest("1.2.0"), payload(9000, 1), vendorKey)), &a); code != http.StatusUnprocessableEntity || a.Job == "" || a.Error != "app 1.2.0 failed its health check (x); back on 1.1.0" {
		t.Errorf("%d %+v", code, a)
	}
	var s api.Job
	if code := call(t, ts, "GET", "/api/v1/jobs/"+a.Job, nil, &s); code != 200 || s.State != Failed || s.Package != "app" {
		t.Errorf("%d %+v", code, s)
	}
}
