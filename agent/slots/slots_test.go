package slots

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/layout"
)

func newStore(t *testing.T, st bootstate.State) *Store {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "EFI/keel"), 0o755)
	block, _ := st.Encode()
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		os.WriteFile(filepath.Join(dir, p), block, 0o644)
	}
	return NewStore(dir)
}

// committed is a box on slot a (1.0.0) with slot b committed too (0.9.0).
func committed() bootstate.State { return bootstate.Initial("1.0.0", "0.9.0") }

// onTrial is a box that booted a trial of 1.1.0 in slot b, GRUB having
// taken one of its three tries, with slot a committed.
func onTrial() bootstate.State {
	st := committed()
	st.B = bootstate.Slot{Bootable: true, Tries: 2, Version: "1.1.0"}
	st.Default = "b"
	return st
}

// Each transition, applied to a state, makes GRUB (bootstate.Decide) do
// what the transition promises on the next boot.
func TestTransitionsAgainstGRUB(t *testing.T) {
	a, b := layout.SlotA, layout.SlotB
	for _, c := range []struct {
		name   string
		from   bootstate.State
		change func(*bootstate.State) error
		want   bootstate.Decision
	}{
		{"mark unbootable: the running slot boots", committed(), func(st *bootstate.State) error {
			MarkUnbootable(st, b, a)
			return nil
		}, bootstate.Decision{Slot: a}},
		{"mark unbootable the default: the running slot boots", func() bootstate.State { st := committed(); st.Default = b; return st }(), func(st *bootstate.State) error {
			MarkUnbootable(st, b, a)
			return nil
		}, bootstate.Decision{Slot: a}},
		{"stage a trial: the new slot is tried", committed(), func(st *bootstate.State) error {
			MarkUnbootable(st, b, a)
			return StageTrial(st, b, "1.1.0", "", 3)
		}, bootstate.Decision{Slot: b, Trial: true}},
		{"commit: the slot boots as good", onTrial(), func(st *bootstate.State) error {
			Commit(st, b)
			return nil
		}, bootstate.Decision{Slot: b}},
		{"mark bad: the other slot boots", onTrial(), func(st *bootstate.State) error {
			MarkBad(st, b)
			return nil
		}, bootstate.Decision{Slot: a}},
		{"record a fallback: the running slot boots as good", func() bootstate.State { st := onTrial(); st.B.Tries = 0; return st }(), func(st *bootstate.State) error {
			RecordFallback(st, b, a)
			return nil
		}, bootstate.Decision{Slot: a}},
		{"boot once: the other slot gets a trial", committed(), func(st *bootstate.State) error {
			return BootOnce(st, b)
		}, bootstate.Decision{Slot: b, Trial: true}},
		{"make default: the other committed slot boots", committed(), func(st *bootstate.State) error {
			return MakeDefault(st, b)
		}, bootstate.Decision{Slot: b}},
		{"nothing bootable: recovery on the last good slot", committed(), func(st *bootstate.State) error {
			MarkBad(st, a)
			MarkBad(st, b)
			return nil
		}, bootstate.Decision{Slot: a, Recovery: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := c.from
			if err := c.change(&st); err != nil {
				t.Fatal(err)
			}
			if err := st.Validate(); err != nil {
				t.Fatal(err)
			}
			if got, _ := bootstate.Decide(st); got != c.want {
				t.Errorf("GRUB does %+v, want %+v (state %+v)", got, c.want, st)
			}
		})
	}
}

// A trial boot that GRUB counts down to zero without a commit falls back,
// and the box never ends on an uncommitted slot.
func TestTrialRunsOutOfTries(t *testing.T) {
	st := committed()
	MarkUnbootable(&st, layout.SlotB, layout.SlotA)
	if err := StageTrial(&st, layout.SlotB, "1.1.0", "", 3); err != nil {
		t.Fatal(err)
	}
	var boots []string
	for range 5 {
		var d bootstate.Decision
		d, st = bootstate.Decide(st)
		boots = append(boots, string(d.Slot))
	}
	if strings.Join(boots, "") != "bbbaa" {
		t.Errorf("boots %v", boots)
	}
}

func TestRefusals(t *testing.T) {
	st := onTrial()
	// b runs its trial; a is the only committed slot.
	if err := CheckOverwrite(&st, layout.SlotA, layout.SlotB); !errors.Is(err, ErrOnlyFallback) {
		t.Errorf("overwrite the only fallback: %v", err)
	}
	if err := StageTrial(&st, layout.SlotA, "1.2.0", "", 0); err == nil {
		t.Error("a trial with no tries was staged")
	}
	if err := MakeDefault(&st, layout.SlotB); err == nil {
		t.Error("an uncommitted slot was made the default")
	}
	empty := bootstate.Initial("1.0.0", "")
	if err := BootOnce(&empty, layout.SlotB); err == nil {
		t.Error("an empty slot was booted once")
	}
}

// A base that asks for a floor raises the box's floor only when its trial
// commits; then the older base in the other slot is no longer bootable,
// GRUB does not fall back to it, and no install, trial or boot-once of a
// version below the floor is taken. The floor survives the encoding.
func TestFloorRisesAtCommit(t *testing.T) {
	st := bootstate.Initial("1.0.0", "")
	MarkUnbootable(&st, layout.SlotB, layout.SlotA)
	if err := StageTrial(&st, layout.SlotB, "2.0.0", "1.5.0", 3); err != nil {
		t.Fatal(err)
	}
	if st.Floor != "" {
		t.Fatalf("floor %q before the commit", st.Floor)
	}
	// The trial fails: GRUB falls back to 1.0.0, which the floor has not
	// reached, and the box can still install 1.0.1.
	failed := st
	MarkBad(&failed, layout.SlotB)
	if failed.Floor != "" || CheckFloor(&failed, "1.0.1") != nil {
		t.Fatalf("a failed trial raised the floor: %+v", failed)
	}

	Commit(&st, layout.SlotB)
	if st.Floor != "1.5.0" {
		t.Fatalf("floor %q after the commit, want 1.5.0", st.Floor)
	}
	if st.A.Bootable || st.A.Version != "" {
		t.Errorf("1.0.0, below the floor, still in slot a: %+v", st.A)
	}
	// With b unbootable (say its disk sectors failed), GRUB has nothing
	// below the floor to fall back to: recovery mode on b.
	broken := st
	broken.B.Bootable = false
	if d, _ := bootstate.Decide(broken); !d.Recovery {
		t.Errorf("GRUB falls back below the floor: %+v", d)
	}
	for _, v := range []string{"1.4.9", "1.0.0", "1.5.0-rc.1"} {
		if err := CheckFloor(&st, v); !errors.Is(err, ErrBelowFloor) || !strings.Contains(err.Error(), "install 1.5.0 or newer") {
			t.Errorf("%s: %v", v, err)
		}
		trial := st
		if err := StageTrial(&trial, layout.SlotA, v, "", 3); !errors.Is(err, ErrBelowFloor) {
			t.Errorf("trial of %s: %v", v, err)
		}
	}
	if err := CheckFloor(&st, "1.5.0"); err != nil {
		t.Errorf("the floor itself: %v", err)
	}
	// A later base with a lower floor does not lower it.
	MarkUnbootable(&st, layout.SlotA, layout.SlotB)
	if err := StageTrial(&st, layout.SlotA, "1.6.0", "1.0.0", 3); err != nil {
		t.Fatal(err)
	}
	Commit(&st, layout.SlotA)
	if st.Floor != "1.5.0" || !st.B.Bootable {
		t.Errorf("after committing 1.6.0 (floor 1.0.0): floor %q, slot b %+v", st.Floor, st.B)
	}
	// Boot-once into a slot below the floor is refused.
	old := st
	old.B.Version = "1.2.0"
	if err := BootOnce(&old, layout.SlotB); !errors.Is(err, ErrBelowFloor) {
		t.Errorf("boot once below the floor: %v", err)
	}
	b, err := st.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := bootstate.Decode(b)
	if err != nil || back.Floor != "1.5.0" || back.B.Floor != "1.5.0" || back.A.Floor != "1.0.0" {
		t.Fatalf("decoded %+v, %v", back, err)
	}
}

// The Store knows the floor it last read or wrote without reading the ESP.
func TestStoreFloor(t *testing.T) {
	st := onTrial()
	st.B.Floor = "1.1.0"
	s := newStore(t, st)
	if f, err := s.Floor(); err != nil || f != "" {
		t.Fatalf("floor before the commit: %q %v", f, err)
	}
	if _, err := s.Commit(layout.SlotB); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(s.Dir, bootstate.PrimaryPath))
	os.Remove(filepath.Join(s.Dir, bootstate.BackupPath))
	if f, err := s.Floor(); err != nil || f != "1.1.0" {
		t.Fatalf("floor after the commit: %q %v", f, err)
	}
}

func TestStoreWritesBothCopiesInPlace(t *testing.T) {
	st := onTrial()
	s := newStore(t, st)
	after, err := s.Commit(layout.SlotB)
	if err != nil {
		t.Fatal(err)
	}
	if !after.B.Good || after.Default != "b" || after.LastGood != "b" || after.Gen != st.Gen+1 {
		t.Errorf("after commit %+v", after)
	}
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		b, _ := os.ReadFile(filepath.Join(s.Dir, p))
		got, err := bootstate.Decode(b)
		if err != nil || *got != *after {
			t.Errorf("%s: %+v %v", p, got, err)
		}
		// GRUB's save_env rewrites the file in place: its size stays.
		if len(b) != bootstate.BlockSize {
			t.Errorf("%s is %d bytes", p, len(b))
		}
	}
}

// The guard and the write are one step: of an install that marks the
// fallback slot while a commit runs, either the commit came first (and the
// install may write) or the install was refused; never both a written
// fallback and an uncommitted running slot.
func TestMarkUnbootableCannotRaceTheCommit(t *testing.T) {
	for range 50 {
		s := newStore(t, onTrial())
		var wg sync.WaitGroup
		var markErr error
		wg.Add(2)
		go func() { defer wg.Done(); s.Commit(layout.SlotB) }()
		go func() { defer wg.Done(); _, markErr = s.MarkUnbootable(layout.SlotA, layout.SlotB) }()
		wg.Wait()
		st, _, err := s.Read()
		if err != nil {
			t.Fatal(err)
		}
		if markErr == nil && !st.B.Good {
			t.Fatalf("slot a was marked for writing while b was uncommitted: %+v", st)
		}
		if markErr != nil && !errors.Is(markErr, ErrOnlyFallback) {
			t.Fatal(markErr)
		}
	}
}

func TestReadUsesBackupWhenPrimaryIsDamaged(t *testing.T) {
	s := newStore(t, bootstate.Initial("1.0.0", ""))
	os.WriteFile(filepath.Join(s.Dir, bootstate.PrimaryPath), make([]byte, bootstate.BlockSize), 0o644)
	st, which, err := s.Read()
	if err != nil || which != Backup || st.A.Version != "1.0.0" {
		t.Fatalf("%+v %s %v", st, which, err)
	}
	if _, err := s.Repair(); err != nil {
		t.Fatal(err)
	}
	if _, which, _ := s.Read(); which != Primary {
		t.Errorf("after the repair the state comes from the %s copy", which)
	}
}

func TestDescribe(t *testing.T) {
	st := bootstate.Initial("1.0.0", "1.1.0")
	st.Default, st.B.Good, st.B.Tries = "b", false, 0
	got := Describe(ParseCmdline("keel.slot=a keel.mode=good keel.bootenv=primary"), &st, "1.0.0")
	if !strings.Contains(got, "The trial boot of 1.1.0 in slot b did not come up healthy") || !strings.Contains(got, "back on 1.0.0 in slot a") {
		t.Errorf("fallback sentence: %s", got)
	}
	got = Describe(ParseCmdline("keel.slot=a keel.mode=recovery keel.recovery=1"), &st, "1.0.0")
	if !strings.Contains(got, "No base slot was bootable") {
		t.Errorf("recovery sentence: %s", got)
	}
	b := ParseCmdline("keel.slot=a keel.mode=recovery keel.recovery=operator")
	if got = Describe(b, &st, "1.0.0"); !b.Recovery || !b.Operator || !strings.Contains(got, "The recovery console was chosen at the GRUB menu") {
		t.Errorf("operator's recovery: %+v %s", b, got)
	}
}

// The app slots go through the same words: a trial, a commit or a mark
// bad, and a restart during a trial falls back.
func TestAppTransitions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := NewAppStore(path)
	if _, err := s.Load(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit("a", "demo", "1.0.0", "found"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MarkUnbootable("a"); err == nil {
		t.Error("the slot in use was marked for writing")
	}
	if _, err := s.StageTrial("b", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	if st := s.State(); st.Active != "b" || st.Committed || st.Previous != "a" || st.CommittedSlot() != "a" {
		t.Errorf("trial %+v", st)
	}
	st, err := s.MarkBad("b", "demo", "1.1.0", "failed")
	if err != nil || st.Active != "a" || !st.Committed || !st.Slot("b").Failed {
		t.Errorf("mark bad %+v %v", st, err)
	}
	if _, err := s.StageTrial("b", "1.2.0"); err != nil {
		t.Fatal(err)
	}
	// The box restarts during the trial.
	s2 := NewAppStore(path)
	if _, err := s2.Load(); err != nil {
		t.Fatal(err)
	}
	msg, err := s2.RecordFallback()
	if err != nil || !strings.Contains(msg, "app 1.2.0 was not committed") || !strings.Contains(msg, "back on 1.0.0") {
		t.Errorf("fallback %q %v", msg, err)
	}
	if st := s2.State(); st.Active != "a" || !st.Committed {
		t.Errorf("after the fallback %+v", st)
	}
	if msg, _ := s2.RecordFallback(); msg != "" {
		t.Errorf("a second fallback: %q", msg)
	}
}
