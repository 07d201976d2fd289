package catalog

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/kpkg"
)

var v = kpkg.MustParseVersion

func req(s string) kpkg.Requirement {
	r, err := kpkg.ParseRequirement(s)
	if err != nil {
		panic(err)
	}
	return r
}

func entry(kind kpkg.Kind, name, version string, requires ...string) Entry {
	e := Entry{Kind: kind, Name: name, Version: v(version), Size: 1000,
		File: fmt.Sprintf("packages/%s-%s-%s.kpkg", name, kind, version), SHA256: strings.Repeat("ab", 32)}
	for _, r := range requires {
		e.Requires = append(e.Requires, req(r))
	}
	return e
}

// demo is the demo release: base 1.0.0 and 1.1.0; app demo 1.0.0, 1.0.1,
// 1.1.0 (base >= 1.1.0), 2.0.0 (app >= 1.1.0), 2.0.1.
func demo() *Catalog {
	return &Catalog{Format: FormatVersion, Version: 7, Generated: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Expires: time.Date(2026, 12, 27, 10, 0, 0, 0, time.UTC), Entries: []Entry{
			entry(kpkg.KindBase, "keel", "1.0.0"),
			entry(kpkg.KindBase, "keel", "1.1.0"),
			entry(kpkg.KindApp, "demo", "1.0.0"),
			entry(kpkg.KindApp, "demo", "1.0.1"),
			entry(kpkg.KindApp, "demo", "1.1.0", "base >= 1.1.0"),
			entry(kpkg.KindApp, "demo", "2.0.0", "app >= 1.1.0"),
			entry(kpkg.KindApp, "demo", "2.0.1"),
		}}
}

func box(base, app string) Box {
	b := Box{Serial: "KX1-0001", Channel: "stable", Hardware: "keel-vm",
		Installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: v(base)},
		Names:     map[kpkg.Kind]string{kpkg.KindBase: "keel"},
		Now:       time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	if app != "" {
		b.Installed[kpkg.KindApp], b.Names[kpkg.KindApp] = v(app), "demo"
	}
	return b
}

// listing renders updates as an operator reads them.
func listing(ups []Update) string {
	var l []string
	for _, u := range ups {
		s := u.Entry.String() + ": "
		if u.Installable {
			s += "installable"
		} else {
			s += u.Reason
		}
		l = append(l, s)
	}
	return strings.Join(l, "\n")
}

func names(plan []Entry) string {
	var l []string
	for _, e := range plan {
		l = append(l, e.String())
	}
	return strings.Join(l, ", ")
}

func TestUpdatesDemoRelease(t *testing.T) {
	got := listing(demo().Updates(box("1.0.0", "1.0.0")))
	want := `base keel 1.1.0: installable
app demo 1.0.1: installable
app demo 1.1.0: requires base >= 1.1.0; installed 1.0.0
app demo 2.0.0: requires app >= 1.1.0; installed 1.0.0
app demo 2.0.1: requires app >= 2.0.0; installed 1.0.0`
	if got != want {
		t.Errorf("updates:\n%s\nwant:\n%s", got, want)
	}

	got = listing(demo().Updates(box("1.1.0", "1.1.0")))
	want = `app demo 2.0.0: installable
app demo 2.0.1: requires app >= 2.0.0; installed 1.1.0`
	if got != want {
		t.Errorf("after base 1.1.0 and app 1.1.0:\n%s\nwant:\n%s", got, want)
	}
	if ups := demo().Updates(box("1.1.0", "2.0.1")); len(ups) != 0 {
		t.Errorf("an up-to-date box is offered:\n%s", listing(ups))
	}
}

func TestUpdatesWait(t *testing.T) {
	b := box("1.0.0", "1.0.0")
	installed := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	b.LastInstall = map[kpkg.Kind]Installed{kpkg.KindApp: {Version: v("1.0.0"), At: installed, Wait: 24 * time.Hour}}

	ups := demo().Updates(b)
	if ups[0].Entry.String() != "base keel 1.1.0" || !ups[0].Installable {
		t.Errorf("a wait after an app holds a base: %+v", ups[0])
	}
	u := ups[1]
	want := "waits 24h0m0s after app 1.0.0 (installed 2026-11-27 10:00 UTC); installable at 2026-11-28 10:00 UTC"
	if u.Installable || u.Reason != want || !u.InstallableAt.Equal(installed.Add(24*time.Hour)) {
		t.Errorf("app 1.0.1: installable %v, reason %q, at %v; want the reason %q", u.Installable, u.Reason, u.InstallableAt, want)
	}
	if r := ups[2].Reason; r != "requires base >= 1.1.0; installed 1.0.0" {
		t.Errorf("a requirement should be named before a wait: %q", r)
	}

	forced := demo().Updates(b, IgnoreWait)
	if !forced[1].Installable || forced[2].Installable {
		t.Errorf("force ignores waits only:\n%s", listing(forced))
	}

	b.Now = installed.Add(24 * time.Hour)
	if u := demo().Updates(b)[1]; !u.Installable {
		t.Errorf("once the wait is over: %q", u.Reason)
	}
}

func TestUpdatesTargets(t *testing.T) {
	c := demo()
	c.Entries[1].Channels = []string{"beta"}                // base 1.1.0
	c.Entries[3].Serials = []string{"KX1-0002", "KX1-0003"} // app 1.0.1, a staged rollout
	c.Entries[6].Hardware = []string{"kx-200"}              // app 2.0.1
	c.Entries = append(c.Entries, entry(kpkg.KindApp, "other", "9.0.0"))

	offered := func(b Box) string {
		var l []string
		for _, u := range c.Updates(b) {
			l = append(l, u.Entry.String())
		}
		return strings.Join(l, ", ")
	}
	b := box("1.0.0", "1.0.0")
	if got, want := offered(b), "app demo 1.1.0, app demo 2.0.0"; got != want {
		t.Errorf("stable KX1-0001 keel-vm is offered %s, want %s", got, want)
	}
	b.Channel, b.Serial, b.Hardware = "beta", "KX1-0002", "kx-200"
	if got, want := offered(b), "base keel 1.1.0, app demo 1.0.1, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1"; got != want {
		t.Errorf("beta KX1-0002 kx-200 is offered %s, want %s", got, want)
	}
	// A box with no app yet is offered every app of every name.
	b = box("1.0.0", "")
	b.Hardware = "kx-200"
	if got := offered(b); !strings.Contains(got, "app other 9.0.0") || !strings.Contains(got, "app demo 1.0.0") {
		t.Errorf("a box without an app is offered %s", got)
	}
}

func TestPlanDemoRelease(t *testing.T) {
	b := box("1.0.0", "1.0.0")
	// Waits do not hold a plan.
	b.LastInstall = map[kpkg.Kind]Installed{kpkg.KindApp: {Version: v("1.0.0"), At: b.Now, Wait: 24 * time.Hour}}
	plan, err := demo().Plan(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(plan), "base keel 1.1.0, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1"; got != want {
		t.Errorf("plan: %s\nwant: %s", got, want)
	}

	plan, err = demo().Plan(box("1.1.0", "1.0.1"))
	if got, want := names(plan), "app demo 1.1.0, app demo 2.0.0, app demo 2.0.1"; err != nil || got != want {
		t.Errorf("plan from base 1.1.0, app 1.0.1: %s (%v)\nwant: %s", got, err, want)
	}

	// A box without an app is planned one from the catalog.
	plan, err = demo().Plan(box("1.0.0", ""))
	if got, want := names(plan), "base keel 1.1.0, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1"; err != nil || got != want {
		t.Errorf("plan from no app: %s (%v)\nwant: %s", got, err, want)
	}

	// A box that knows no names (a download key may carry none): the
	// plan's copies of the maps are writable all the same.
	b = box("1.0.0", "1.0.0")
	b.Names = nil
	plan, err = demo().Plan(b)
	if got, want := names(plan), "base keel 1.1.0, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1"; err != nil || got != want {
		t.Errorf("plan without names: %s (%v)\nwant: %s", got, err, want)
	}
}

func TestPlanStepsThroughIntermediateBase(t *testing.T) {
	c := demo()
	c.Entries = append(c.Entries, entry(kpkg.KindBase, "keel", "1.2.0", "base >= 1.1.0"), entry(kpkg.KindBase, "keel", "1.1.1"))
	plan, err := c.Plan(box("1.0.0", "2.0.1"))
	if got, want := names(plan), "base keel 1.1.1, base keel 1.2.0"; err != nil || got != want {
		t.Errorf("plan: %s (%v)\nwant: %s", got, err, want)
	}
}

func TestPlanAppEnablesBase(t *testing.T) {
	c := demo()
	c.Entries = append(c.Entries, entry(kpkg.KindBase, "keel", "2.0.0", "app >= 2.0.0"))
	plan, err := c.Plan(box("1.0.0", "1.0.0"))
	if got, want := names(plan), "base keel 1.1.0, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1, base keel 2.0.0"; err != nil || got != want {
		t.Errorf("plan: %s (%v)\nwant: %s", got, err, want)
	}
}

func TestPlanNothingToInstall(t *testing.T) {
	_, err := demo().Plan(box("1.1.0", "2.0.1"))
	want := "nothing to install: appliance KX1-0001 is up to date (base keel 1.1.0, app demo 2.0.1) on channel stable"
	if !errors.Is(err, ErrNothingToInstall) || err.Error() != want {
		t.Errorf("up to date: %v\nwant: %s", err, want)
	}

	c := demo()
	c.Entries = append(c.Entries, entry(kpkg.KindApp, "demo", "3.0.0", "base >= 9.0.0"))
	_, err = c.Plan(box("1.1.0", "2.0.1"))
	want = "nothing to install: app demo 3.0.0 requires base >= 9.0.0; installed 1.1.0"
	if !errors.Is(err, ErrNothingToInstall) || err.Error() != want {
		t.Errorf("blocked: %v\nwant: %s", err, want)
	}
}
