package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

func TestInstallHappyPath(t *testing.T) {
	e := newEnv(t)
	data := payload(3<<20+123, 0)
	pkg := build(t, manifest("1.2.0"), data, vendorKey)
	slotA := e.slotPrefix("a", slotSize)

	j, err := e.in.Start(context.Background(), bytes.NewReader(pkg), Options{Size: int64(len(pkg))})
	if err != nil {
		t.Fatal(err)
	}
	s := j.Status()
	if s.State != Done || s.Progress != 1 || s.Version != "1.2.0" || s.Slot != "b" || !strings.Contains(s.Message, "reboots into it") {
		t.Errorf("job %+v", s)
	}
	if got, ok := e.in.jobs().Get(j.ID()); !ok || got != j {
		t.Errorf("job %s is not in the registry", j.ID())
	}
	if !bytes.Equal(e.slotPrefix("b", len(data)), data) {
		t.Error("slot b does not hold the payload")
	}
	if !bytes.Equal(e.slotPrefix("a", slotSize), slotA) {
		t.Error("the running slot a was written")
	}
	st := e.state()
	want := bootstate.Slot{Bootable: true, Good: false, Tries: bootstate.DefaultTries, Version: "1.2.0"}
	if st.B != want || st.Default != "b" || st.LastGood != "a" || st.A != (bootstate.Slot{Bootable: true, Good: true, Version: "1.1.0"}) {
		t.Errorf("boot state %+v", st)
	}
	if d, _ := bootstate.Decide(*st); d.Slot != "b" || !d.Trial {
		t.Errorf("GRUB would boot %+v", d)
	}
	if n := e.reboots.Load(); n != 1 {
		t.Errorf("Reboot called %d times", n)
	}
	// The box is going down: nothing more is written meanwhile.
	before := e.snapshot()
	if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.3.0"), data, vendorKey)), Options{}); !errors.Is(err, ErrBusy) {
		t.Errorf("install during the reboot: %v", err)
	}
	e.assertUnchanged(before)
}

// Every refusal comes before a byte is written, to a slot or to the boot
// state, and says why in a sentence.
func TestRefusedBeforeAnyWrite(t *testing.T) {
	data := payload(200<<10+7, 1)
	good := build(t, manifest("1.2.0"), data, vendorKey)
	withManifest := func(f func(*kpkg.Manifest)) []byte {
		m := manifest("1.2.0")
		f(&m)
		return build(t, m, data, vendorKey)
	}
	// A signature taken from another package of the same manifest length.
	swapped := entries(t, build(t, manifest("1.2.1"), data, vendorKey))
	swapped[1] = entries(t, good)[1]
	flipped := bytes.Clone(good)
	flipped[512+40] ^= 0x04 // inside manifest.json

	for _, c := range []struct {
		name   string
		pkg    []byte
		size   int64
		status int
		want   string
		setup  func(*env)
	}{
		{name: "bad signature", pkg: retar(t, swapped), status: 400, want: "signature does not verify"},
		{name: "flipped manifest bit", pkg: flipped, status: 400, want: "signature does not verify"},
		{name: "unknown key", pkg: build(t, manifest("1.2.0"), data, otherKey), status: 403, want: "unknown key"},
		{name: "truncated in the manifest", pkg: good[:700], status: 400, want: "truncated"},
		{name: "truncated in the signature", pkg: good[:1024+512+60], status: 400, want: "truncated"},
		{name: "truncated payload of known size", pkg: good[:len(good)-5000], size: int64(len(good) - 5000), status: 400, want: "needs at least"},
		{name: "downgrade", pkg: build(t, manifest("1.0.5"), data, vendorKey), status: 409, want: "1.0.5 is older than the installed 1.1.0; use allow_downgrade to downgrade"},
		{name: "same version", pkg: build(t, manifest("1.1.0"), data, vendorKey), status: 409, want: "1.1.0 is already installed; use allow_downgrade to reinstall"},
		{name: "same version other build", pkg: build(t, manifest("1.1.0+rebuild.2"), data, vendorKey), status: 409, want: "already installed"},
		{name: "wrong hardware", pkg: withManifest(func(m *kpkg.Manifest) { m.Hardware = []string{"kx-900"} }), status: 422, want: `is for hardware "kx-900"; this box is "keel-vm"`},
		{name: "requirement", pkg: withManifest(func(m *kpkg.Manifest) {
			m.Requires = []kpkg.Requirement{{Kind: kpkg.KindBase, Op: kpkg.OpGE, Version: kpkg.MustParseVersion("1.1.5")}}
		}), status: 422, want: "requires base >= 1.1.5; installed 1.1.0"},
		{name: "app package", pkg: withManifest(func(m *kpkg.Manifest) { m.Kind = kpkg.KindApp }), status: 422, want: "is an app package, and only base packages can be installed so far"},
		{name: "larger than the slot", pkg: build(t, manifest("1.2.0"), payload(slotSize+1, 2), vendorKey), status: 422, want: "holds only"},
		{name: "running an uncommitted trial", pkg: good, status: 409, want: "not committed yet", setup: func(e *env) {
			st := bootstate.Initial("1.1.0", "1.0.0")
			st.A = bootstate.Slot{Bootable: true, Tries: 2, Version: "1.1.0"}
			e.setState(st)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			if c.setup != nil {
				c.setup(e)
			}
			before := e.snapshot()
			j, err := e.in.Start(context.Background(), bytes.NewReader(c.pkg), Options{Size: c.size})
			if err == nil {
				t.Fatal("installed")
			}
			if j != nil {
				t.Errorf("a job %s was made", j.ID())
			}
			t.Logf("%d: %v", HTTPStatus(err), err)
			if got := HTTPStatus(err); got != c.status {
				t.Errorf("status %d, want %d (%v)", got, c.status, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if len(e.in.jobs().List()) != 0 {
				t.Error("a refused package left a job")
			}
			e.assertUnchanged(before)
			if e.reboots.Load() != 0 {
				t.Error("rebooted")
			}
		})
	}
}

func TestAllowDowngradeAllowsReinstallAndDowngrade(t *testing.T) {
	for _, v := range []string{"1.1.0", "1.0.5"} {
		t.Run(v, func(t *testing.T) {
			e := newEnv(t)
			data := payload(100<<10, 3)
			j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest(v), data, vendorKey)), Options{AllowDowngrade: true})
			if err != nil {
				t.Fatal(err)
			}
			if st := e.state(); j.Status().State != Done || st.B.Version != v || st.Default != "b" || !bytes.Equal(e.slotPrefix("b", len(data)), data) {
				t.Errorf("job %+v, boot state %+v", j.Status(), st)
			}
		})
	}
	// allow_downgrade says what it allows: it never overwrites the only
	// committed slot while the running one is on trial.
	t.Run("not over an uncommitted trial", func(t *testing.T) {
		e := newEnv(t)
		st := bootstate.Initial("1.1.0", "1.0.0")
		st.A = bootstate.Slot{Bootable: true, Tries: 2, Version: "1.1.0"}
		e.setState(st)
		before := e.snapshot()
		j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.0.5"), payload(1000, 0), vendorKey)), Options{AllowDowngrade: true})
		if !errors.Is(err, ErrUncommitted) || j != nil || !strings.Contains(err.Error(), "slot b (1.0.0) is the only committed fallback") {
			t.Fatalf("job %v, error %v", j, err)
		}
		e.assertUnchanged(before)
	})
}

// A base's signed floor goes into the boot state with its trial; once the
// box has a floor, no base below it installs, allow_downgrade or not, and
// nothing is written.
func TestAntiRollbackFloor(t *testing.T) {
	e := newEnv(t)
	m := manifest("1.2.0")
	m.Floor = kpkg.MustParseVersion("1.1.0")
	if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, m, payload(1000, 1), vendorKey)), Options{}); err != nil {
		t.Fatal(err)
	}
	if st := e.state(); st.B.Floor != "1.1.0" || st.Floor != "" {
		t.Fatalf("staged with floor: slot b %+v, box floor %q", st.B, st.Floor)
	}

	e = newEnv(t)
	st := bootstate.Initial("1.1.0", "")
	st.Floor, st.A.Floor = "1.1.0", "1.1.0"
	e.setState(st)
	before := e.snapshot()
	for _, v := range []string{"1.0.9", "1.1.0-rc.1"} {
		for _, opts := range []Options{{}, {AllowDowngrade: true}} {
			j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest(v), payload(1000, 0), vendorKey)), opts)
			if !errors.Is(err, ErrBelowFloor) || j != nil || !strings.Contains(err.Error(), "install 1.1.0 or newer") || HTTPStatus(err) != http.StatusConflict {
				t.Errorf("%s %+v: job %v, error %v", v, opts, j, err)
			}
		}
	}
	e.assertUnchanged(before)
	// The floor itself, with allow_downgrade, still installs.
	if j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.1.0"), payload(1000, 0), vendorKey)), Options{AllowDowngrade: true}); err != nil || j.Status().State != Done {
		t.Fatalf("the floor version: %v", err)
	}
}

// payloadOffset is where the payload starts in a package from kpkg.Write.
func payloadOffset(t *testing.T, pkg []byte) int {
	es := entries(t, pkg)
	pad := func(n int) int { return (n + 511) / 512 * 512 }
	return 3*512 + pad(len(es[0].data)) + pad(len(es[1].data))
}

// failedUnbootable checks a job that failed after slot b was marked
// unbootable: the box stays on slot a.
func failedUnbootable(t *testing.T, e *env, j *Job, err error, want string) {
	t.Helper()
	if j == nil {
		t.Fatalf("no job for a failure while writing: %v", err)
	}
	s := j.Status()
	if s.State != Failed || s.Message != err.Error() || !strings.Contains(s.Message, want) || !strings.Contains(s.Message, "slot b is left unbootable and the box stays on slot a") {
		t.Errorf("job %+v", s)
	}
	st := e.state()
	if st.B.Bootable || st.B.Good || st.B.Tries != 0 || st.B.Version != "" || st.Default != "a" || st.LastGood != "a" || !st.A.Good {
		t.Errorf("boot state %+v", st)
	}
	if d, _ := bootstate.Decide(*st); d.Slot != "a" || d.Trial || d.Recovery {
		t.Errorf("GRUB would boot %+v", d)
	}
	if e.reboots.Load() != 0 {
		t.Error("rebooted")
	}
}

func TestFlippedPayloadBitFailsAndSlotStaysUnbootable(t *testing.T) {
	e := newEnv(t)
	data := payload(1<<20+5, 4)
	pkg := build(t, manifest("1.2.0"), data, vendorKey)
	pkg[payloadOffset(t, pkg)+len(data)/2] ^= 0x10
	j, err := e.in.Start(context.Background(), bytes.NewReader(pkg), Options{Size: int64(len(pkg))})
	if !errors.Is(err, kpkg.ErrPayload) || HTTPStatus(err) != http.StatusBadRequest {
		t.Fatalf("error %v", err)
	}
	failedUnbootable(t, e, j, err, "payload does not match the manifest")
}

func TestTruncatedPayloadOfUnknownSize(t *testing.T) {
	e := newEnv(t)
	pkg := build(t, manifest("1.2.0"), payload(1<<20, 5), vendorKey)
	j, err := e.in.Start(context.Background(), bytes.NewReader(pkg[:len(pkg)-4000]), Options{})
	if !errors.Is(err, kpkg.ErrTruncated) || HTTPStatus(err) != http.StatusBadRequest {
		t.Fatalf("error %v", err)
	}
	failedUnbootable(t, e, j, err, "truncated")
}

func TestRebootLater(t *testing.T) {
	e := newEnv(t)
	j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(4096, 0), vendorKey)), Options{RebootLater: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.reboots.Load() != 0 || !strings.Contains(j.Status().Message, "boots on the next reboot") {
		t.Errorf("rebooted %d times; job %+v", e.reboots.Load(), j.Status())
	}
	if st := e.state(); st.Default != "b" || st.B.Tries != 3 {
		t.Errorf("boot state %+v", st)
	}
	// With no reboot pending, a newer package may replace the staged one.
	if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.3.0"), payload(4096, 1), vendorKey)), Options{RebootLater: true}); err != nil {
		t.Fatal(err)
	}
	if st := e.state(); st.B.Version != "1.3.0" {
		t.Errorf("boot state %+v", st)
	}
}

func TestRebootFailureIsReported(t *testing.T) {
	e := newEnv(t)
	e.in.Reboot = func() error { return errors.New("init refused") }
	e.in.Tries = 5
	j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(4096, 0), vendorKey)), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s := j.Status(); s.State != Done || !strings.Contains(s.Message, "the reboot failed (init refused)") || !strings.Contains(s.Message, "5 tries") {
		t.Errorf("job %+v", s)
	}
	if e.state().B.Tries != 5 {
		t.Errorf("tries %d", e.state().B.Tries)
	}
	if e.in.rebooting.Load() {
		t.Error("a failed reboot still blocks installs")
	}
}

func TestOneInstallAtATime(t *testing.T) {
	e := newEnv(t)
	pkg := build(t, manifest("1.2.0"), payload(2<<20, 6), vendorKey)
	pr, pw := io.Pipe()
	type result struct {
		j   *Job
		err error
	}
	res := make(chan result, 1)
	go func() {
		j, err := e.in.Start(context.Background(), pr, Options{RebootLater: true})
		res <- result{j, err}
	}()
	half := payloadOffset(t, pkg) + 1<<20
	if _, err := pw.Write(pkg[:half]); err != nil {
		t.Fatal(err)
	}
	running := waitRunning(t, e.in)
	before := e.snapshot()
	_, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.3.0"), payload(10, 0), vendorKey)), Options{})
	if !errors.Is(err, ErrBusy) || HTTPStatus(err) != http.StatusConflict || !strings.Contains(err.Error(), running.ID()) {
		t.Errorf("second install: %v", err)
	}
	e.assertUnchanged(before)
	if _, err := pw.Write(pkg[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if r := <-res; r.err != nil || r.j != running {
		t.Fatalf("first install: %v", r.err)
	}
}

// waitRunning waits until an install job runs and has written something.
func waitRunning(t *testing.T, in *Installer) *Job {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, j := range in.jobs().List() {
			if s := j.Status(); s.State == Running && s.Progress > 0 {
				return j
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("no install job started")
	return nil
}

// brokenDevice fails the way a dying disk does.
type brokenDevice struct {
	Device
	failWrite bool
	corrupt   bool
}

func (d *brokenDevice) WriteAt(b []byte, off int64) (int, error) {
	if d.failWrite && off > 0 {
		return 0, errors.New("input/output error")
	}
	return d.Device.WriteAt(b, off)
}

func (d *brokenDevice) ReadAt(b []byte, off int64) (int, error) {
	n, err := d.Device.ReadAt(b, off)
	// One bit in the middle of the third MiB reads back wrong.
	if at := int64(2<<20 + 12345); d.corrupt && off <= at && at < off+int64(n) {
		b[at-off] ^= 1
	}
	return n, err
}

func TestSlotFailures(t *testing.T) {
	for _, c := range []struct {
		name string
		dev  brokenDevice
		want string
	}{
		{"write error", brokenDevice{failWrite: true}, "slot b: input/output error"},
		{"read-back mismatch", brokenDevice{corrupt: true}, "slot b: MiB 2 reads back differently from what was written: the disk may be failing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			open := e.in.OpenSlot
			e.in.OpenSlot = func(slot layout.Label) (Device, int64, error) {
				d, n, err := open(slot)
				dev := c.dev
				dev.Device = d
				return &dev, n, err
			}
			j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(3<<20, 7), vendorKey)), Options{})
			if !errors.Is(err, ErrSystem) || HTTPStatus(err) != http.StatusInternalServerError {
				t.Fatalf("error %v", err)
			}
			failedUnbootable(t, e, j, err, c.want)
		})
	}
}

// failWrite makes the nth write of the boot state (both copies) fail.
func failWrite(e *env, failAt int) {
	n := 0
	e.in.Slots.WriteBlock = func(path string, block []byte) error {
		if strings.HasSuffix(path, bootstate.PrimaryPath) {
			n++
		}
		if n == failAt {
			return fmt.Errorf("write boot state: no space left on device")
		}
		return os.WriteFile(path, block, 0o644)
	}
}

func TestBootStateFailures(t *testing.T) {
	t.Run("marking unbootable", func(t *testing.T) {
		e := newEnv(t)
		failWrite(e, 1)
		before := e.snapshot()
		j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(4096, 0), vendorKey)), Options{})
		if !errors.Is(err, ErrSystem) || j == nil || j.Status().State != Failed || !strings.Contains(err.Error(), "could not be marked unbootable") {
			t.Fatalf("error %v", err)
		}
		e.assertUnchanged(before)
	})
	t.Run("staging the trial", func(t *testing.T) {
		e := newEnv(t)
		failWrite(e, 2)
		j, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(4096, 0), vendorKey)), Options{})
		if !errors.Is(err, ErrSystem) || !strings.Contains(err.Error(), "trial boot could not be staged") {
			t.Fatalf("error %v", err)
		}
		if st := e.state(); j.Status().State != Failed || st.B.Bootable || st.Default != "a" || e.reboots.Load() != 0 {
			t.Errorf("job %+v, boot state %+v", j.Status(), st)
		}
	})
}

func TestCancelledContextStopsTheWrite(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	j, err := e.in.Start(ctx, bytes.NewReader(build(t, manifest("1.2.0"), payload(4096, 0), vendorKey)), Options{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	failedUnbootable(t, e, j, err, "cancelled")
}

func TestJobsKeepsTheNewest(t *testing.T) {
	js := NewJobs(3)
	var all []*Job
	for i := range 5 {
		j := newJob(fmt.Sprintf("1.%d.0", i), "b")
		if i != 0 {
			j.finish(Done, "ok")
		}
		js.add(j)
		all = append(all, j)
	}
	// The running first job stays; the oldest finished ones go.
	var got []string
	for _, j := range js.List() {
		got = append(got, j.Status().Version)
	}
	if strings.Join(got, " ") != "1.4.0 1.3.0 1.0.0" {
		t.Errorf("kept %v", got)
	}
	if _, ok := js.Get(all[1].ID()); ok {
		t.Error("an evicted job is still found")
	}
	if j, ok := js.Get(all[4].ID()); !ok || j != all[4] {
		t.Error("the newest job is not found")
	}
}
