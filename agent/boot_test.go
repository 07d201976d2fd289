package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"keel.dev/keel/agent/bootseq"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/manifest"
)

// testAgent is an agent whose boot state lives in a temporary ESP: slot b
// boots a trial of 1.1.0 (one try taken), slot a is committed.
func testAgent(t *testing.T) (*agent, *bytes.Buffer) {
	t.Helper()
	var con bytes.Buffer
	a := newAgent(slog.New(slog.NewTextHandler(&con, nil)), &con)
	t.Cleanup(a.stop)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "EFI/keel"), 0o755)
	st := bootstate.Initial("1.0.0", "")
	st.B = bootstate.Slot{Bootable: true, Tries: 2, Version: "1.1.0"}
	st.Default = "b"
	block, _ := st.Encode()
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		os.WriteFile(filepath.Join(dir, p), block, 0o644)
	}
	a.esp = slots.NewStore(dir)
	a.boot0 = slots.ParseCmdline("keel.slot=b keel.mode=trial keel.tries=2 keel.bootenv=primary")
	a.bootSt = &st
	a.base = &manifest.Base{Name: "keel", Version: "1.1.0"}
	return a, &con
}

// fake replaces the Run of the named phases, keeping the phase list (its
// names, needs and provides) as the agent declares it.
func fake(phases []bootseq.Phase, runs map[string]func() error) []bootseq.Phase {
	for i, p := range phases {
		if f, ok := runs[p.Name]; ok {
			phases[i].Run = func(context.Context) error { return f() }
		} else if p.Name != "health check" {
			phases[i].Run = func(context.Context) error { return nil }
		}
	}
	return phases
}

func TestThePhaseListHoldsTogether(t *testing.T) {
	a, _ := testAgent(t)
	if err := bootseq.Check(a.phases()); err != nil {
		t.Fatal(err)
	}
}

// A data partition that cannot be mounted puts the box in recovery mode;
// the API still starts, and the trial boot is neither committed nor
// marked bad (the operator decides from the console).
func TestUnusableDataStillStartsTheAPI(t *testing.T) {
	a, _ := testAgent(t)
	var api atomic.Bool
	phases := fake(a.phases(), map[string]func() error{
		"data partition": func() error {
			a.setRecovery("the data partition could not be mounted")
			a.setData("unusable")
			return errors.New("mount /data: input/output error")
		},
		"API": func() error { api.Store(true); return nil },
	})
	if _, err := bootseq.Run(context.Background(), phases, nil); err != nil {
		t.Fatal(err)
	}
	if !api.Load() {
		t.Error("the API did not start")
	}
	st := a.status()
	if !st.Boot.Recovery || st.Boot.Committed || st.Data.State != "unusable" {
		t.Errorf("status %+v", st.Boot)
	}
	if now, _, _ := a.esp.Read(); now.B.Good || !now.B.Bootable {
		t.Errorf("the boot state changed: %+v", now.B)
	}
}

// A trial boot that fails its health check marks its slot bad and reboots,
// so GRUB boots the other slot; one that passes is committed.
func TestHealthCheckDecidesTheTrial(t *testing.T) {
	a, con := testAgent(t)
	a.health = func() error { return errors.New("the application does not answer") }
	if _, err := bootseq.Run(context.Background(), fake(a.phases(), nil), nil); err != nil {
		t.Fatal(err)
	}
	st, _, _ := a.esp.Read()
	if d, _ := bootstate.Decide(*st); d.Slot != "a" || d.Trial || st.B.Bootable {
		t.Errorf("after the failed check GRUB does %+v (state %+v)", d, st)
	}
	select {
	case act := <-a.shutdown:
		if act != pid1.Reboot {
			t.Errorf("shutdown %v", act)
		}
	default:
		t.Error("no reboot after the failed check")
	}
	if !strings.Contains(con.String(), "failed its health check: the application does not answer") {
		t.Errorf("console: %s", con)
	}

	a, _ = testAgent(t)
	a.health = func() error { return nil }
	if _, err := bootseq.Run(context.Background(), fake(a.phases(), nil), nil); err != nil {
		t.Fatal(err)
	}
	st, _, _ = a.esp.Read()
	if d, _ := bootstate.Decide(*st); d.Slot != "b" || d.Trial || !a.status().Boot.Committed {
		t.Errorf("after the passed check GRUB does %+v", d)
	}
}

// A phase that panics fails alone: the phases after it still run, and PID
// 1 goes on.
func TestAPanickingPhaseDoesNotStopTheOthers(t *testing.T) {
	a, _ := testAgent(t)
	a.health = func() error { return nil }
	var api atomic.Bool
	phases := fake(a.phases(), map[string]func() error{
		"network": func() error { panic("nil map") },
		"API":     func() error { api.Store(true); return nil },
	})
	res, err := bootseq.Run(context.Background(), phases, nil)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, r := range res {
		if r.Err != nil {
			failed = append(failed, r.Phase)
		}
	}
	if strings.Join(failed, ",") != "network" || !api.Load() || !a.status().Boot.Committed {
		t.Errorf("failed %v, API %v, committed %v", failed, api.Load(), a.status().Boot.Committed)
	}
}

// The agent holds port 443 before the application starts, so an
// application cannot take the API's port.
func TestAPIPortIsBoundBeforeTheApplication(t *testing.T) {
	a, _ := testAgent(t)
	var mu sync.Mutex
	var order []string
	note := func(name string) func() error {
		return func() error { mu.Lock(); order = append(order, name); mu.Unlock(); return nil }
	}
	phases := fake(a.phases(), map[string]func() error{"API port": note("port"), "application": note("app")})
	if _, err := bootseq.Run(context.Background(), phases, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, ",") != "port,app" {
		t.Fatalf("order %v", order)
	}
}

// The API answers while the application is still starting (its slot
// mounted, its process launched); the commit waits for the application.
func TestTheAPIDoesNotWaitForTheApplication(t *testing.T) {
	a, _ := testAgent(t)
	var mu sync.Mutex
	var order []string
	note := func(name string) { mu.Lock(); order = append(order, name); mu.Unlock() }
	apiUp := make(chan struct{})
	phases := fake(a.phases(), map[string]func() error{
		"application":  func() error { <-apiUp; note("app"); return nil },
		"API":          func() error { note("api"); close(apiUp); return nil },
		"health check": func() error { note("commit"); return nil },
	})
	done := make(chan error, 1)
	go func() { _, err := bootseq.Run(context.Background(), phases, nil); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the boot sequence hangs: the API waits for the application")
	}
	if strings.Join(order, ",") != "api,app,commit" {
		t.Fatalf("order %v", order)
	}
}
