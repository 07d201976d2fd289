package slots

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"keel.dev/keel/image/bootstate"
)

func newStore(t *testing.T, st bootstate.State) Store {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "EFI/keel"), 0o755)
	block, _ := st.Encode()
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		os.WriteFile(filepath.Join(dir, p), block, 0o644)
	}
	return Store{Dir: dir}
}

func TestCommitAndMarkBad(t *testing.T) {
	st := bootstate.Initial("1.0.0", "1.1.0")
	st.Default, st.B.Good, st.B.Tries = "b", false, 2
	s := newStore(t, st)
	after, err := s.Update(func(st *bootstate.State) error { Commit(st, "b"); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !after.B.Good || after.Default != "b" || after.LastGood != "b" || after.Gen != st.Gen+1 {
		t.Errorf("after commit %+v", after)
	}
	after, _ = s.Update(func(st *bootstate.State) error { MarkBad(st, "b"); return nil })
	if after.B.Bootable || after.Default != "a" {
		t.Errorf("after mark bad %+v", after)
	}
	// The primary copy is rewritten in place at the same size, as GRUB's
	// save_env needs.
	fi, _ := os.Stat(filepath.Join(s.Dir, bootstate.PrimaryPath))
	if fi.Size() != bootstate.BlockSize {
		t.Errorf("primary copy is %d bytes", fi.Size())
	}
}

func TestReadUsesBackupWhenPrimaryIsDamaged(t *testing.T) {
	s := newStore(t, bootstate.Initial("1.0.0", ""))
	os.WriteFile(filepath.Join(s.Dir, bootstate.PrimaryPath), make([]byte, bootstate.BlockSize), 0o644)
	st, which, err := s.Read()
	if err != nil || which != "backup" || st.A.Version != "1.0.0" {
		t.Fatalf("%+v %s %v", st, which, err)
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
	if !strings.Contains(got, "recovery mode") {
		t.Errorf("recovery sentence: %s", got)
	}
}
