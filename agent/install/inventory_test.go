package install

import (
	"bytes"
	"context"
	"testing"
	"time"

	"keel.dev/keel/agent/inventory"
	"keel.dev/keel/image/kpkg"
)

// Every install path reports to the inventory with the package's wait, so
// the wait holds after an upload or a bundle as after an online install.
func TestEveryPathIsRecorded(t *testing.T) {
	e := newBundleEnv(t)
	inv := &inventory.Inventory{}
	e.in.Inventory = inv
	m := appManifest("1.1.0")
	m.Wait = kpkg.Duration(24 * time.Hour)
	pkg := build(t, m, payload(5000, 1), vendorKey)
	if _, err := e.in.Start(context.Background(), bytes.NewReader(pkg), Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.in.Start(context.Background(), bytes.NewReader(build(t, manifest("1.2.0"), payload(5000, 2), vendorKey)), Options{RebootLater: true, Via: inventory.Online}); err != nil {
		t.Fatal(err)
	}
	h := inv.History()
	if len(h) != 2 || h[1].Via != inventory.Upload || h[1].Version.String() != "1.1.0" || h[1].Wait != m.Wait ||
		h[0].Via != inventory.Online || h[0].Kind != kpkg.KindBase {
		t.Fatalf("history after an upload and an online install: %+v", h)
	}
	if last := inv.LastInstalls()[kpkg.KindApp]; last.Wait != 24*time.Hour {
		t.Errorf("the app's wait is not held: %+v", last)
	}

	e2 := newBundleEnv(t)
	inv2 := &inventory.Inventory{}
	e2.in.Inventory = inv2
	b, _ := makeBundle(t, appManifest("1.1.0"), appManifest("1.2.0"))
	if _, err := e2.in.StartBundle(context.Background(), bytes.NewReader(b), Options{}); err != nil {
		t.Fatal(err)
	}
	h = inv2.History()
	if len(h) != 2 || h[0].Via != inventory.Bundle || h[0].Version.String() != "1.2.0" || h[1].Version.String() != "1.1.0" {
		t.Errorf("history after a bundle: %+v", h)
	}
	// A refused package records nothing.
	if _, err := e2.in.Start(context.Background(), bytes.NewReader(build(t, appManifest("1.0.0"), payload(10, 1), vendorKey)), Options{}); err == nil {
		t.Fatal("a downgrade was installed")
	}
	if len(inv2.History()) != 2 {
		t.Error("a refused package was recorded")
	}
}
