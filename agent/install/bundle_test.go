package install

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/bundle"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// bundleEnv is appEnv with a pending folder, and an application runtime
// that records the switch: what it reports installed follows it.
func newBundleEnv(t *testing.T) *appEnv {
	t.Helper()
	e := newAppEnv(t)
	e.in.PendingDir = filepath.Join(t.TempDir(), "pending")
	e.switchTo = func(slot layout.Label, version string) error {
		e.app[kpkg.KindApp] = kpkg.MustParseVersion(version)
		return nil
	}
	return e
}

// rebootInto is the agent starting again on slot running, which runs base:
// a new Installer over the same devices, boot state and pending folder.
// The running slot is committed.
func (e *appEnv) rebootInto(running layout.Label, base string) {
	e.t.Helper()
	old := e.in
	e.app[kpkg.KindBase] = kpkg.MustParseVersion(base)
	// The application runtime starts again as apps.Manager does: a switch
	// the restart cut short goes back.
	apps := slots.NewAppStore(old.AppSlots.Path)
	if _, err := apps.Load(); err != nil {
		e.t.Fatal(err)
	}
	if _, err := apps.RecordFallback(); err != nil {
		e.t.Fatal(err)
	}
	e.in = &Installer{
		Trusted: old.Trusted, Hardware: old.Hardware, Installed: old.Installed, Slots: old.Slots, Running: running,
		OpenSlot: old.OpenSlot, Reboot: old.Reboot, AppSlots: apps, OpenAppSlot: old.OpenAppSlot, SwitchApp: old.SwitchApp,
		PendingDir: old.PendingDir,
	}
	st := e.state()
	sl := st.Slot(running)
	if !sl.Good {
		sl.Good, sl.Tries = true, 0
		st.LastGood = running
	}
	if other := st.Slot(running.Other()); !other.Good {
		other.Bootable, other.Tries = false, 0 // a failed trial
	}
	st.Default = running
	e.setState(*st)
}

func withRequires(m kpkg.Manifest, reqs ...string) kpkg.Manifest {
	for _, s := range reqs {
		r, err := kpkg.ParseRequirement(s)
		if err != nil {
			panic(err)
		}
		m.Requires = append(m.Requires, r)
	}
	return m
}

// bundled is a package in a test bundle.
type bundled struct {
	m    kpkg.Manifest
	data []byte // payload
	pkg  []byte // the .kpkg
}

// makeBundle writes a bundle of real signed packages with image/bundle.
func makeBundle(t *testing.T, ms ...kpkg.Manifest) ([]byte, []bundled) {
	t.Helper()
	return makeSignedBundle(t, func(int) ed25519.PrivateKey { return vendorKey }, ms...)
}

// makeSignedBundle is makeBundle with package i signed by key(i).
func makeSignedBundle(t *testing.T, key func(int) ed25519.PrivateKey, ms ...kpkg.Manifest) ([]byte, []bundled) {
	t.Helper()
	meta := bundle.Meta{Serial: "KX1-0001", Created: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)}
	var ps []bundled
	var rs []io.Reader
	for i, m := range ms {
		data := payload(100000+i*7000, byte(i+1))
		pkg := build(t, m, data, key(i))
		sum := sha256.Sum256(pkg)
		meta.Packages = append(meta.Packages, bundle.Entry{Kind: m.Kind, Name: m.Name, Version: m.Version,
			File: fmt.Sprintf("%s-%s-%s.kpkg", m.Name, m.Kind, m.Version), Size: int64(len(pkg)), SHA256: hex.EncodeToString(sum[:])})
		ps = append(ps, bundled{m, data, pkg})
		rs = append(rs, bytes.NewReader(pkg))
	}
	var out bytes.Buffer
	if err := bundle.Write(&out, meta, rs); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), ps
}

// demoBundle is base 1.2.0, then app 1.1.0 that needs it, then app 1.2.0
// that needs app 1.1.0.
func demoBundle(t *testing.T) ([]byte, []bundled) {
	return makeBundle(t, manifest("1.2.0"),
		withRequires(appManifest("1.1.0"), "base >= 1.2.0"),
		withRequires(appManifest("1.2.0"), "app >= 1.1.0"))
}

func (e *appEnv) pending() *pendingJob {
	e.t.Helper()
	pj, err := e.in.readPending()
	if err != nil {
		e.t.Fatal(err)
	}
	return pj
}

// pendingNames lists the pending folder.
func (e *appEnv) pendingNames() []string {
	e.t.Helper()
	des, err := os.ReadDir(e.in.PendingDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		e.t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

func TestBundleBaseThenAppsAcrossTheReboot(t *testing.T) {
	e := newBundleEnv(t)
	b, ps := demoBundle(t)
	ts := serve(t, e.env)
	var a answer
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(b), &a); code != http.StatusAccepted || a.Job == "" {
		t.Fatalf("%d %+v", code, a)
	}
	const want = "base keel 1.2.0 is in slot b, staged for a trial boot with 3 tries; the box reboots into base 1.2.0 now, then installs the 2 remaining packages (app demo 1.1.0, app demo 1.2.0)"
	if a.Message != want {
		t.Errorf("message %q", a.Message)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.reboots.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.reboots.Load(); n != 1 {
		t.Fatalf("Reboot called %d times", n)
	}
	// The base is in slot b and staged; the apps wait in the pending folder.
	if !bytes.Equal(e.slotPrefix("b", len(ps[0].data)), ps[0].data) {
		t.Error("slot b does not hold the base payload")
	}
	if st := e.state(); !st.B.Bootable || st.B.Good || st.B.Tries != 3 || st.B.Version != "1.2.0" || st.Default != "b" || st.LastGood != "a" {
		t.Errorf("boot state %+v", st)
	}
	if len(e.switches) != 0 {
		t.Errorf("switched before the reboot: %v", e.switches)
	}
	pj := e.pending()
	if pj.Job != a.Job || pj.Step != StepStaged || pj.Base != "1.2.0" || pj.Next != 0 || len(pj.Packages) != 2 || pj.Total != 3 ||
		pj.Packages[0].Version.String() != "1.1.0" || pj.Packages[1].Version.String() != "1.2.0" || pj.Packages[1].Index != 3 ||
		!slices.Equal(pj.Installed, []string{"base keel 1.2.0"}) {
		t.Errorf("job.json %+v", pj)
	}
	for i, p := range pj.Packages {
		saved, err := os.ReadFile(filepath.Join(e.in.PendingDir, p.File))
		if err != nil || !bytes.Equal(saved, ps[i+1].pkg) {
			t.Errorf("%s is not the package: %v", p.File, err)
		}
	}
	if names := e.pendingNames(); len(names) != 3 {
		t.Errorf("pending folder %v", names)
	}
	var s api.Job
	if code := call(t, ts, "GET", "/api/v1/jobs/"+a.Job, nil, &s); code != http.StatusOK || s.Kind != "bundle" || s.State != Running || s.Progress <= 0.3 || s.Progress >= 0.9 {
		t.Errorf("%d %+v", code, s)
	}

	// The agent starts on slot b: until the job resumes, installs wait.
	e.rebootInto("b", "1.2.0")
	ts = serve(t, e.env)
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(build(t, appManifest("1.3.0"), payload(1000, 1), vendorKey)), &a); code != http.StatusConflict ||
		a.Error != fmt.Sprintf("the bundle of job %s is not finished: app demo 1.1.0, app demo 1.2.0 installs once base 1.2.0 runs; wait until it is done (GET /api/v1/jobs/%s)", pj.Job, pj.Job) {
		t.Errorf("install while pending: %d %+v", code, a)
	}
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Join(e.switches, ",") != "b 1.1.0,a 1.2.0" {
		t.Errorf("switches %v", e.switches)
	}
	if !bytes.Equal(e.appPrefix("b", len(ps[1].data)), ps[1].data) || !bytes.Equal(e.appPrefix("a", len(ps[2].data)), ps[2].data) {
		t.Error("the application slots do not hold the apps")
	}
	const done = "the bundle is installed: base keel 1.2.0, app demo 1.1.0, app demo 1.2.0"
	if code := call(t, ts, "GET", "/api/v1/jobs/"+pj.Job, nil, &s); code != http.StatusOK || s.Kind != "bundle" || s.State != Done || s.Progress != 1 || s.Message != done {
		t.Errorf("%d %+v", code, s)
	}
	if names := e.pendingNames(); !slices.Equal(names, []string{pendingFile}) {
		t.Errorf("pending folder %v", names)
	}
	if pj := e.pending(); pj.Step != StepDone || pj.Next != 2 || pj.Message != done {
		t.Errorf("job.json %+v", pj)
	}
	// The record survives another reboot, and installs go on.
	e.rebootInto("b", "1.2.0")
	ts = serve(t, e.env)
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := call(t, ts, "GET", "/api/v1/jobs/"+pj.Job, nil, &s); code != http.StatusOK || s.State != Done || s.Message != done {
		t.Errorf("%d %+v", code, s)
	}
	if len(e.switches) != 2 {
		t.Errorf("switches %v", e.switches)
	}
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(build(t, appManifest("1.3.0"), payload(1000, 1), vendorKey)), &a); code != http.StatusAccepted {
		t.Errorf("install after the bundle: %d %+v", code, a)
	}
}

func TestBundleRolledBack(t *testing.T) {
	e := newBundleEnv(t)
	b, _ := demoBundle(t)
	j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The trial of slot b failed: the agent runs slot a, still base 1.1.0.
	e.rebootInto("a", "1.1.0")
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	const want = "base 1.2.0 did not come up healthy; the box is back on 1.1.0; the remaining packages (app demo 1.1.0, app demo 1.2.0) were not installed"
	got, ok := e.in.jobs().Get(j.ID())
	if !ok || got.Status().State != Failed || got.Status().Message != want {
		t.Fatalf("job %v %+v", ok, got.Status())
	}
	if len(e.switches) != 0 {
		t.Errorf("switches %v", e.switches)
	}
	if names := e.pendingNames(); !slices.Equal(names, []string{pendingFile}) {
		t.Errorf("pending folder %v", names)
	}
	if pj := e.pending(); pj.Step != StepFailed || pj.Message != want {
		t.Errorf("job.json %+v", pj)
	}
	// Nothing waits any more.
	if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("1.1.0"), payload(1000, 1), vendorKey)), Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestBundleWithoutBaseInstallsAtOnce(t *testing.T) {
	e := newBundleEnv(t)
	before := e.snapshot()
	// demo 1.0.0 runs already: it is skipped.
	b, ps := makeBundle(t, appManifest("1.0.0"), appManifest("1.1.0"), withRequires(appManifest("1.2.0"), "app >= 1.1.0"))
	j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{Size: int64(len(b))})
	if err != nil {
		t.Fatal(err)
	}
	s := j.Status()
	if s.Kind != "bundle" || s.State != Done || s.Progress != 1 || s.Message != "the bundle is installed: app demo 1.0.0 (already installed), app demo 1.1.0, app demo 1.2.0" {
		t.Errorf("job %+v", s)
	}
	if strings.Join(e.switches, ",") != "b 1.1.0,a 1.2.0" {
		t.Errorf("switches %v", e.switches)
	}
	if !bytes.Equal(e.appPrefix("a", len(ps[2].data)), ps[2].data) {
		t.Error("application slot a does not hold app 1.2.0")
	}
	e.assertUnchanged(before)
	if e.reboots.Load() != 0 {
		t.Error("rebooted")
	}
	if names := e.pendingNames(); len(names) != 0 {
		t.Errorf("pending folder %v", names)
	}
	// Uploading it again installs nothing.
	_, err = e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{})
	if !errors.Is(err, ErrNotNewer) || err.Error() != "the box has everything in the bundle, or newer versions (app demo 1.0.0, app demo 1.1.0, app demo 1.2.0); use allow_downgrade to install it anyway; nothing was written" {
		t.Errorf("again: %v", err)
	}
}

// damage flips a payload byte of the i-th package inside bundle b.
func damage(t *testing.T, b []byte, ps []bundled, i int) {
	t.Helper()
	at := bytes.Index(b, ps[i].pkg)
	if at < 0 {
		t.Fatal("package not in the bundle")
	}
	b[at+payloadOffset(t, ps[i].pkg)+len(ps[i].data)/2] ^= 0x10
}

func TestBundleDamagedPackageInTheMiddle(t *testing.T) {
	t.Run("installed at once", func(t *testing.T) {
		e := newBundleEnv(t)
		b, ps := makeBundle(t, appManifest("1.1.0"), appManifest("1.2.0"), appManifest("1.3.0"))
		damage(t, b, ps, 1)
		j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{})
		if !errors.Is(err, kpkg.ErrPayload) || HTTPStatus(err) != http.StatusBadRequest || j == nil {
			t.Fatalf("error %v (%d)", err, HTTPStatus(err))
		}
		s := j.Status()
		if s.State != Failed || s.Message != err.Error() || !strings.HasPrefix(s.Message, "app demo 1.2.0 (2 of 3) failed: writing 1.2.0 to application slot a stopped at byte") ||
			!strings.Contains(s.Message, "payload does not match the manifest") ||
			!strings.HasSuffix(s.Message, "; the application keeps running from application slot b; installed: app demo 1.1.0; not installed: app demo 1.3.0") {
			t.Errorf("job %+v", s)
		}
		if strings.Join(e.switches, ",") != "b 1.1.0" {
			t.Errorf("switches %v", e.switches)
		}
	})
	t.Run("after the base", func(t *testing.T) {
		e := newBundleEnv(t)
		b, ps := demoBundle(t)
		damage(t, b, ps, 1)
		j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{})
		if !errors.Is(err, kpkg.ErrPayload) || j == nil {
			t.Fatalf("error %v", err)
		}
		if s := j.Status(); s.State != Failed || !strings.HasPrefix(s.Message, "app demo 1.1.0 (2 of 3) failed: saving app demo 1.1.0 stopped at byte") ||
			!strings.HasSuffix(s.Message, "; not installed: base keel 1.2.0, app demo 1.2.0; base keel 1.2.0 was written to slot b but not staged, so slot b is left unbootable and the box stays on slot a") {
			t.Errorf("job %+v", s)
		}
		if st := e.state(); st.B.Bootable || st.Default != "a" {
			t.Errorf("boot state %+v", st)
		}
		if names := e.pendingNames(); len(names) != 0 {
			t.Errorf("pending folder %v", names)
		}
		if e.reboots.Load() != 0 || len(e.switches) != 0 {
			t.Errorf("rebooted %d, switches %v", e.reboots.Load(), e.switches)
		}
		// Nothing waits: the next install goes ahead.
		if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("1.1.0"), payload(1000, 1), vendorKey)), Options{}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBundleUnknownKeyAfterTheBase(t *testing.T) {
	e := newBundleEnv(t)
	b, _ := makeSignedBundle(t, func(i int) ed25519.PrivateKey {
		return map[bool]ed25519.PrivateKey{true: otherKey, false: vendorKey}[i == 2]
	},
		manifest("1.2.0"), appManifest("1.1.0"), appManifest("1.2.0"))
	j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{})
	if !errors.Is(err, kpkg.ErrUnknownKey) || HTTPStatus(err) != http.StatusForbidden || j == nil || j.Status().State != Failed ||
		!strings.HasPrefix(err.Error(), "app demo 1.2.0 (3 of 3) failed: ") {
		t.Fatalf("error %v", err)
	}
	if names := e.pendingNames(); len(names) != 0 || e.reboots.Load() != 0 || e.state().B.Bootable {
		t.Errorf("pending folder %v, reboots %d, boot state %+v", names, e.reboots.Load(), e.state())
	}
}

func TestBundleResumesAfterPowerCut(t *testing.T) {
	e := newBundleEnv(t)
	b, ps := demoBundle(t)
	j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{RebootLater: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.reboots.Load() != 0 || !strings.Contains(j.Status().Message, "the box boots base 1.2.0 on the next reboot, then installs the 2 remaining packages") {
		t.Errorf("rebooted %d; job %+v", e.reboots.Load(), j.Status())
	}
	e.rebootInto("b", "1.2.0")
	// The power goes while app 1.2.0 starts.
	cut := e.switchTo
	e.switchTo = func(slot layout.Label, version string) error {
		if version == "1.2.0" {
			runtime.Goexit()
		}
		return cut(slot, version)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = e.in.ResumePending(context.Background())
	}()
	<-stopped
	pj := e.pending()
	if pj.Step != StepResuming || pj.Next != 1 || !slices.Equal(pj.Installed, []string{"base keel 1.2.0", "app demo 1.1.0"}) {
		t.Fatalf("job.json %+v", pj)
	}
	if names := e.pendingNames(); !slices.Equal(names, []string{pj.Packages[1].File, pendingFile}) {
		t.Errorf("pending folder %v", names)
	}

	e.switchTo = cut
	e.switches = nil
	e.rebootInto("b", "1.2.0")
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Join(e.switches, ",") != "a 1.2.0" {
		t.Errorf("switches %v", e.switches)
	}
	if !bytes.Equal(e.appPrefix("a", len(ps[2].data)), ps[2].data) {
		t.Error("application slot a does not hold app 1.2.0")
	}
	got, ok := e.in.jobs().Get(j.ID())
	if !ok || got.Status().State != Done || got.Status().Message != "the bundle is installed: base keel 1.2.0, app demo 1.1.0, app demo 1.2.0" {
		t.Errorf("job %+v", got.Status())
	}
}

func TestBundleFailingAppAfterTheReboot(t *testing.T) {
	e := newBundleEnv(t)
	b, _ := makeBundle(t, manifest("1.2.0"), appManifest("1.1.0"), appManifest("1.2.0"), appManifest("1.3.0"))
	j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{RebootLater: true})
	if err != nil {
		t.Fatal(err)
	}
	e.rebootInto("b", "1.2.0")
	ok := e.switchTo
	e.switchTo = func(slot layout.Label, version string) error {
		if version == "1.2.0" {
			return errors.New("app 1.2.0 failed its health check; back on 1.1.0")
		}
		return ok(slot, version)
	}
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := e.in.jobs().Get(j.ID())
	if s := got.Status(); s.State != Failed || s.Message != "app demo 1.2.0 (3 of 4) failed: app 1.2.0 failed its health check; back on 1.1.0; installed: base keel 1.2.0, app demo 1.1.0; not installed: app demo 1.3.0" {
		t.Errorf("job %+v", s)
	}
	if strings.Join(e.switches, ",") != "b 1.1.0,a 1.2.0" {
		t.Errorf("switches %v", e.switches)
	}
	if names := e.pendingNames(); !slices.Equal(names, []string{pendingFile}) {
		t.Errorf("pending folder %v", names)
	}
}

func TestBundleWithTwoBases(t *testing.T) {
	e := newBundleEnv(t)
	b, ps := makeBundle(t, manifest("1.2.0"), appManifest("1.1.0"), withRequires(manifest("1.3.0"), "base >= 1.2.0"), appManifest("1.2.0"))
	j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{RebootLater: true})
	if err != nil {
		t.Fatal(err)
	}
	e.rebootInto("b", "1.2.0")
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	// App 1.1.0 runs; base 1.3.0 is staged in slot a, and the box reboots.
	if strings.Join(e.switches, ",") != "b 1.1.0" || e.reboots.Load() != 1 {
		t.Errorf("switches %v, reboots %d", e.switches, e.reboots.Load())
	}
	if st := e.state(); st.Default != "a" || st.A.Good || st.A.Version != "1.3.0" || !bytes.Equal(e.slotPrefix("a", len(ps[2].data)), ps[2].data) {
		t.Errorf("boot state %+v", st)
	}
	if pj := e.pending(); pj.Step != StepStaged || pj.Base != "1.3.0" || pj.Next != 2 {
		t.Errorf("job.json %+v", pj)
	}
	e.rebootInto("a", "1.3.0")
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, _ := e.in.jobs().Get(j.ID())
	if s := got.Status(); s.State != Done || s.Message != "the bundle is installed: base keel 1.2.0, app demo 1.1.0, base keel 1.3.0, app demo 1.2.0" {
		t.Errorf("job %+v", s)
	}
	if strings.Join(e.switches, ",") != "b 1.1.0,a 1.2.0" {
		t.Errorf("switches %v", e.switches)
	}
}

func TestBundleRefusedBeforeAnyWrite(t *testing.T) {
	good, _ := demoBundle(t)
	damaged := bytes.Clone(good)
	damaged[512] = 'x' // bundle.json's opening brace
	empty := retar(t, []entry{{bundle.MetaName, []byte(`{"format":1,"serial":"KX1-0001","created":"2026-11-27T10:00:00Z","packages":[]}`)}})
	backwards, _ := makeBundle(t, manifest("1.2.0"), appManifest("1.2.0"), appManifest("1.1.0"))
	// bundle.json alone, listing an app package of 1 TiB after the base: it
	// is refused before its packages are read.
	meta, err := json.Marshal(bundle.Meta{Format: bundle.FormatVersion, Serial: "KX1-0001", Packages: []bundle.Entry{
		{Kind: kpkg.KindBase, Name: "keel", Version: kpkg.MustParseVersion("1.2.0"), File: "keel.kpkg", Size: 1000, SHA256: strings.Repeat("0", 64)},
		{Kind: kpkg.KindApp, Name: "demo", Version: kpkg.MustParseVersion("1.1.0"), File: "demo.kpkg", Size: 1 << 40, SHA256: strings.Repeat("0", 64)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	huge := retar(t, []entry{{bundle.MetaName, meta}})
	uncommitted := func(e *appEnv) {
		st := bootstate.Initial("1.1.0", "1.0.0")
		st.A = bootstate.Slot{Bootable: true, Tries: 2, Version: "1.1.0"}
		e.setState(st)
	}
	for _, c := range []struct {
		name    string
		body    []byte
		noDir   bool
		status  int
		want    string
		pending bool // a bundle waits for its reboot
		chunked bool // the upload's size is not known
		setup   func(*appEnv)
	}{
		{name: "no data partition", body: good, noDir: true, status: http.StatusUnprocessableEntity, want: "data partition"},
		{name: "damaged bundle.json", body: damaged, status: http.StatusBadRequest, want: "bundle is damaged: bundle.json is not JSON"},
		{name: "empty", body: empty, status: http.StatusBadRequest, want: "bundle is damaged: bundle.json: it holds no packages; nothing was written"},
		{name: "backwards", body: backwards, status: http.StatusConflict, want: "the bundle lists app demo 1.1.0 (3 of 3) after app 1.2.0: it is not a plan; nothing was written"},
		{name: "truncated", body: good[:len(good)-20000], status: http.StatusBadRequest, want: "bundle is truncated: the upload has"},
		{name: "a bundle waits", body: good, pending: true, status: http.StatusConflict, want: "is not finished: app demo 1.1.0, app demo 1.2.0 installs once base 1.2.0 runs"},
		{name: "running an uncommitted trial", body: good, setup: uncommitted, status: http.StatusConflict, want: "slot a runs a trial boot of 1.1.0 that is not committed yet"},
		{name: "no room on the data partition", body: huge, chunked: true, status: http.StatusUnprocessableEntity, want: "the packages that install after the reboot need 1048576 MiB on the data partition"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newBundleEnv(t)
			if c.noDir {
				e.in.PendingDir = ""
			}
			if c.pending {
				if _, err := e.in.StartBundle(context.Background(), bytes.NewReader(good), Options{RebootLater: true}); err != nil {
					t.Fatal(err)
				}
			}
			if c.setup != nil {
				c.setup(e)
			}
			before := e.snapshot()
			apps := e.appSums()
			files := e.pendingNames()
			ts := serve(t, e.env)
			var body io.Reader = bytes.NewReader(c.body)
			if c.chunked {
				body = io.MultiReader(body) // no Content-Length
			}
			var a answer
			if code := call(t, ts, "POST", "/api/v1/install", body, &a); code != c.status || !strings.Contains(a.Error, c.want) || a.Job != "" {
				t.Errorf("%d %+v", code, a)
			}
			e.assertUnchanged(before)
			if !maps.Equal(apps, e.appSums()) || !slices.Equal(files, e.pendingNames()) || len(e.switches) != 0 {
				t.Error("something was written")
			}
		})
	}
}

func TestPendingJSONIsReadable(t *testing.T) {
	e := newBundleEnv(t)
	b, _ := demoBundle(t)
	if _, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{RebootLater: true}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(e.in.PendingDir, pendingFile))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil || v["base"] != "1.2.0" || v["next"] != float64(0) {
		t.Errorf("job.json %s: %v", raw, err)
	}
}

// A power cut between job.json and the staging of the trial boot: the box
// comes back on its old base, and the job fails saying so.
func TestBundleCutBeforeStaging(t *testing.T) {
	e := newBundleEnv(t)
	b, _ := demoBundle(t)
	j, err := e.in.StartBundle(context.Background(), bytes.NewReader(b), Options{RebootLater: true})
	if err != nil {
		t.Fatal(err)
	}
	pj := e.pending()
	pj.Step = StepStaging
	if err := e.in.writePending(pj); err != nil {
		t.Fatal(err)
	}
	e.rebootInto("a", "1.1.0")
	if err := e.in.ResumePending(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, ok := e.in.jobs().Get(j.ID())
	if !ok || got.Status().State != Failed || !strings.Contains(got.Status().Message, "the box restarted before the trial boot of base 1.2.0 was staged; it stays on 1.1.0") {
		t.Errorf("job %+v", got.Status())
	}
	if pj := e.pending(); pj.Step != StepFailed {
		t.Errorf("job.json at %s", pj.Step)
	}
}

// A single base package is a bundle of one: after the reboot its job says
// how the trial boot ended, committed or rolled back.
func TestSingleBaseInstallEndsAfterTheReboot(t *testing.T) {
	for _, c := range []struct {
		name, running, base, want string
		state                     State
	}{
		{"committed", "b", "1.2.0", "base keel 1.2.0 passed its trial boot and is committed", Done},
		{"rolled back", "a", "1.1.0", "base 1.2.0 did not come up healthy; the box is back on 1.1.0", Failed},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newBundleEnv(t)
			j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(5000, 1), vendorKey)), Options{RebootLater: true})
			if err != nil {
				t.Fatal(err)
			}
			if pj := e.pending(); pj.Step != StepStaged || pj.Kind != kindInstall {
				t.Fatalf("job.json %+v", pj)
			}
			// Another package may still replace one staged for later.
			if err := e.in.Ready(); err != nil {
				t.Errorf("a staged single package blocks the next install: %v", err)
			}
			e.rebootInto(layout.Label(c.running), c.base)
			if err := e.in.ResumePending(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, ok := e.in.jobs().Get(j.ID())
			if !ok || got.Status().State != c.state || got.Status().Message != c.want || got.Status().Kind != "install" {
				t.Errorf("job %+v", got.Status())
			}
		})
	}
}
