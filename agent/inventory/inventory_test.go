package inventory

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/kpkg"
)

func app(v string, wait time.Duration) kpkg.Manifest {
	return kpkg.Manifest{Kind: kpkg.KindApp, Name: "demo", Version: kpkg.MustParseVersion(v), Wait: kpkg.Duration(wait)}
}

func TestHistorySurvivesARestartAndHoldsTheWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.json")
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	running := Running{Name: "demo", Version: kpkg.MustParseVersion("1.1.0")}
	inv := &Inventory{Path: path, Now: func() time.Time { return now },
		App: func() (Running, bool) { return running, true }}
	if err := inv.Load(); err != nil {
		t.Fatal(err)
	}
	if err := inv.Recorded(app("1.0.0", 0), Bundle); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	if err := inv.Recorded(app("1.1.0", 24*time.Hour), Upload); err != nil {
		t.Fatal(err)
	}

	// After a reboot.
	inv2 := &Inventory{Path: path, App: inv.App}
	if err := inv2.Load(); err != nil {
		t.Fatal(err)
	}
	last := inv2.LastInstalls()[kpkg.KindApp]
	if last.Version.String() != "1.1.0" || !last.At.Equal(now) || last.Wait != 24*time.Hour {
		t.Errorf("last install %+v", last)
	}
	h := inv2.History()
	if len(h) != 2 || h[0].Via != Upload || h[1].Via != Bundle {
		t.Errorf("history %+v", h)
	}
	rep := inv2.Report()
	if len(rep.Installed) != 1 || rep.Installed[0].Via != Upload || rep.Installed[0].WaitUntil == nil || !rep.Installed[0].WaitUntil.Equal(now.Add(24*time.Hour)) {
		t.Errorf("report %+v", rep)
	}

	ts := httptest.NewServer(func() http.Handler { mux := http.NewServeMux(); inv2.Routes(mux); return mux }())
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/api/v1/inventory")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Report
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got.History) != 2 || got.Installed[0].Version.String() != "1.1.0" {
		t.Errorf("GET /api/v1/inventory: %+v %v", got, err)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	inv := &Inventory{}
	for i := range MaxHistory + 10 {
		inv.Recorded(app("1.0."+string(rune('0'+i%10)), 0), Online)
	}
	if n := len(inv.History()); n != MaxHistory {
		t.Errorf("%d records kept", n)
	}
}

func TestDamagedHistoryIsReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.json")
	os.WriteFile(path, []byte("{not json"), 0o600)
	inv := &Inventory{Path: path}
	if err := inv.Load(); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("load: %v", err)
	}
	if err := inv.Recorded(app("1.0.0", 0), Upload); err != nil {
		t.Fatal(err)
	}
	if len(inv.History()) != 1 {
		t.Error("a damaged history stops new records")
	}
}
