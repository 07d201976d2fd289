// Package slots is the one owner of slot state, for the base slots (the
// boot state on the ESP that GRUB reads) and, in the same words, for the
// application slots (the app state file on data). Every change is one of
// the named transitions below, made under one lock and written at once;
// no other package edits the boot environment or the app state file.
//
// The transitions, for both kinds:
//
//	MarkUnbootable  before a slot is written: never boot it until staged
//	StageTrial      a written slot is tried: N tries (base) or one start (app)
//	Commit          a trial passed its health checks: good, and the default
//	MarkBad         a trial failed: never boot it again, back to the other
//	RecordFallback  GRUB (or a restart) already went back: make it official
//	Repair          rewrite both copies of the boot state from the one read
//	BootOnce        try the other base slot once, as a trial
//	MakeDefault     boot the other committed base slot from now on
//
// Each is a pure function of the state (the base ones are table-tested
// against bootstate.Decide, the GRUB model) wrapped by a Store method that
// reads, changes and writes under the store's lock.
package slots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// Copy says which copy of the boot state a read used.
type Copy string

// The copies, and none when both were unreadable.
const (
	Primary Copy = "primary"
	Backup  Copy = "backup"
	NoCopy  Copy = "none"
)

// Store reads and writes the two copies of the boot state in an ESP mounted
// at Dir. Copies are rewritten in place, never renamed: GRUB's save_env
// writes to the file's blocks, which must stay where they are. The two
// copies, written one after the other with a sync between, are what makes a
// write power-cut safe: GRUB and Read take the primary when it is valid.
// One Store per ESP: its lock is what keeps a forced install from racing
// the commit.
type Store struct {
	Dir string
	// WriteBlock writes one copy; nil writes it in place. Tests swap it
	// to fail a write.
	WriteBlock func(path string, block []byte) error

	mu sync.Mutex
	// floor is the floor of the last state read or written: after boot
	// only this Store changes the boot state, so the status need not read
	// the ESP to show it.
	floor   string
	floorOK bool
}

// NewStore is the store of the ESP mounted at dir.
func NewStore(dir string) *Store { return &Store{Dir: dir} }

// Floor is the box's anti-rollback floor ("" for none), read from the
// ESP only when the Store has not read or written the state yet.
func (s *Store) Floor() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.floorOK {
		if _, _, err := s.read(); err != nil {
			return "", err
		}
	}
	return s.floor, nil
}

// Read returns the state and which copy it came from.
func (s *Store) Read() (*bootstate.State, Copy, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read()
}

func (s *Store) read() (*bootstate.State, Copy, error) {
	p, perr := os.ReadFile(filepath.Join(s.Dir, bootstate.PrimaryPath))
	b, berr := os.ReadFile(filepath.Join(s.Dir, bootstate.BackupPath))
	if perr != nil && berr != nil {
		return nil, NoCopy, fmt.Errorf("read boot state: %w", errors.Join(perr, berr))
	}
	st, which, err := bootstate.Pick(p, b)
	if err != nil {
		return nil, NoCopy, fmt.Errorf("read boot state in %s: %w", s.Dir, err)
	}
	s.floor, s.floorOK = st.Floor, true
	return st, Copy(which), nil
}

// write stores st with a new generation in both copies, primary first.
func (s *Store) write(st *bootstate.State) error {
	st.Gen++
	block, err := st.Encode()
	if err != nil {
		return err
	}
	write := s.WriteBlock
	if write == nil {
		write = writeInPlace
	}
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		if err := write(filepath.Join(s.Dir, p), block); err != nil {
			s.floorOK = false // what is on the ESP is not known now
			return fmt.Errorf("write boot state: %w", err)
		}
	}
	s.floor, s.floorOK = st.Floor, true
	return nil
}

// update reads the state, applies change and writes it back, all under
// the lock.
func (s *Store) update(what string, change func(*bootstate.State) error) (*bootstate.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, _, err := s.read()
	if err != nil {
		return nil, err
	}
	if err := change(st); err != nil {
		return nil, err
	}
	if err := s.write(st); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return st, nil
}

func writeInPlace(path string, block []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(block, 0); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("%s: sync: %w", path, err)
	}
	return f.Close()
}

// ErrOnlyFallback refuses to write the one committed base slot while the
// running slot is an uncommitted trial: nothing may take the box's only
// way back, forced or not.
var ErrOnlyFallback = errors.New("the slot is the only committed fallback")

// MarkUnbootable makes target unbootable before it is written, with the
// running slot as the default, so that a power cut during the write boots
// the running slot. It refuses (ErrOnlyFallback) when running is an
// uncommitted trial and target is the only committed slot; the check and
// the write are one step under the lock.
func (s *Store) MarkUnbootable(target, running layout.Label) (*bootstate.State, error) {
	return s.update("mark slot "+string(target)+" unbootable", func(st *bootstate.State) error {
		if err := CheckOverwrite(st, target, running); err != nil {
			return err
		}
		MarkUnbootable(st, target, running)
		return nil
	})
}

// StageTrial makes target, just written with version, the default with
// tries trial boots. LastGood is unchanged, so a failed trial falls back.
// floor is the anti-rollback floor the version's signed manifest asks for
// ("" for none); it takes effect when the trial is committed.
func (s *Store) StageTrial(target layout.Label, version, floor string, tries int) (*bootstate.State, error) {
	return s.update("stage a trial boot of slot "+string(target), func(st *bootstate.State) error {
		return StageTrial(st, target, version, floor, tries)
	})
}

// Commit makes slot the committed default after a healthy boot.
func (s *Store) Commit(slot layout.Label) (*bootstate.State, error) {
	return s.update("commit slot "+string(slot), func(st *bootstate.State) error { Commit(st, slot); return nil })
}

// MarkBad makes slot unbootable and the other slot the default.
func (s *Store) MarkBad(slot layout.Label) (*bootstate.State, error) {
	return s.update("mark slot "+string(slot)+" bad", func(st *bootstate.State) error { MarkBad(st, slot); return nil })
}

// RecordFallback makes official what GRUB did: failed is marked bad and
// running, which GRUB booted instead, committed as the default.
func (s *Store) RecordFallback(failed, running layout.Label) (*bootstate.State, error) {
	return s.update("record the fallback from slot "+string(failed), func(st *bootstate.State) error {
		RecordFallback(st, failed, running)
		return nil
	})
}

// Repair rewrites both copies from the one that could be read, which
// mends a damaged primary.
func (s *Store) Repair() (*bootstate.State, error) {
	return s.update("repair the boot state", func(*bootstate.State) error { return nil })
}

// BootOnce stages slot, which must hold a base, as a trial with one try:
// the next boot tries it, and without a commit the box comes back.
func (s *Store) BootOnce(slot layout.Label) (*bootstate.State, error) {
	return s.update("boot slot "+string(slot)+" once", func(st *bootstate.State) error { return BootOnce(st, slot) })
}

// MakeDefault makes slot, which must be committed, the default.
func (s *Store) MakeDefault(slot layout.Label) (*bootstate.State, error) {
	return s.update("make slot "+string(slot)+" the default", func(st *bootstate.State) error { return MakeDefault(st, slot) })
}

// CheckOverwrite refuses to write target while running is an uncommitted
// trial and target holds the only committed base.
func CheckOverwrite(st *bootstate.State, target, running layout.Label) error {
	if run, oth := st.Slot(running), st.Slot(target); target != running && !run.Good && oth.Good {
		return fmt.Errorf("%w: slot %s runs a trial boot of %s that is not committed yet, and slot %s (%s) is the only committed fallback; wait for the commit (or for the rollback) and install again",
			ErrOnlyFallback, running, run.Version, target, oth.Version)
	}
	return nil
}

// MarkUnbootable: target is never booted; the default is running.
func MarkUnbootable(st *bootstate.State, target, running layout.Label) {
	*st.Slot(target) = bootstate.Slot{}
	if st.Default == target {
		st.Default = running
	}
}

// StageTrial: target holds version, bootable with tries, and is the default.
func StageTrial(st *bootstate.State, target layout.Label, version, floor string, tries int) error {
	if tries < 1 || tries > bootstate.MaxTries {
		return fmt.Errorf("a trial boot needs 1 to %d tries, not %d", bootstate.MaxTries, tries)
	}
	if err := CheckFloor(st, version); err != nil {
		return err
	}
	*st.Slot(target) = bootstate.Slot{Bootable: true, Tries: tries, Version: version, Floor: floor}
	st.Default = target
	return nil
}

// Commit: slot is good, the default and the last good. The box's floor
// rises to the slot's, and the other slot, if it holds a base below the
// floor, is made unbootable: the floor exists because that version must
// not run again, not even as a fallback.
func Commit(st *bootstate.State, slot layout.Label) {
	sl := st.Slot(slot)
	sl.Bootable, sl.Good, sl.Tries = true, true, 0
	st.Default, st.LastGood = slot, slot
	if higher(sl.Floor, st.Floor) {
		st.Floor = sl.Floor
	}
	if o := st.Slot(slot.Other()); o.Version != "" && CheckFloor(st, o.Version) != nil {
		*o = bootstate.Slot{}
	}
}

// ErrBelowFloor refuses a base version below the box's anti-rollback
// floor, whatever the downgrade options.
var ErrBelowFloor = errors.New("below the anti-rollback floor")

// CheckFloor refuses version when it is below st's floor.
func CheckFloor(st *bootstate.State, version string) error {
	if st.Floor == "" {
		return nil
	}
	floor, err := kpkg.ParseVersion(st.Floor)
	if err != nil {
		return nil // a floor that does not parse was never written by Commit
	}
	v, err := kpkg.ParseVersion(version)
	if err != nil || v.Compare(floor) < 0 {
		return fmt.Errorf("%w: base %s is older than %s, the oldest version a base installed on this appliance allows (a security floor no downgrade option can go below); install %s or newer",
			ErrBelowFloor, version, st.Floor, st.Floor)
	}
	return nil
}

// higher says whether floor a is above floor b ("" is none).
func higher(a, b string) bool {
	va, err := kpkg.ParseVersion(a)
	if err != nil {
		return false
	}
	vb, err := kpkg.ParseVersion(b)
	return err != nil || va.Compare(vb) > 0
}

// MarkBad: slot is never booted again; the other one is the default.
func MarkBad(st *bootstate.State, slot layout.Label) {
	sl := st.Slot(slot)
	sl.Bootable, sl.Good, sl.Tries = false, false, 0
	if slot == st.Default {
		st.Default = slot.Other()
	}
}

// RecordFallback: failed is bad, running committed.
func RecordFallback(st *bootstate.State, failed, running layout.Label) {
	MarkBad(st, failed)
	Commit(st, running)
}

// BootOnce: slot gets one trial boot and is the default; the committed
// slot stays the last good one to come back to.
func BootOnce(st *bootstate.State, slot layout.Label) error {
	sl := st.Slot(slot)
	if sl.Version == "" {
		return fmt.Errorf("slot %s holds no base to boot", slot)
	}
	if err := CheckFloor(st, sl.Version); err != nil {
		return err
	}
	*sl = bootstate.Slot{Bootable: true, Tries: 1, Version: sl.Version, Floor: sl.Floor}
	st.Default = slot
	return nil
}

// MakeDefault: a committed slot becomes the default.
func MakeDefault(st *bootstate.State, slot layout.Label) error {
	if sl := st.Slot(slot); !sl.Good || !sl.Bootable {
		return fmt.Errorf("slot %s (%s) is not committed; boot it once as a trial instead", slot, sl.Version)
	}
	st.Default = slot
	return nil
}
