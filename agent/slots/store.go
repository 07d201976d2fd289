package slots

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"keel.dev/keel/image/bootstate"
)

// Store reads and writes the two copies of the boot state in an ESP mounted
// at Dir. Copies are rewritten in place, never renamed: GRUB's save_env
// writes to the file's blocks, which must stay where they are. The two
// copies, written one after the other with a sync between, are what makes a
// write power-cut safe: GRUB and Read take the primary when it is valid.
type Store struct {
	Dir string
}

// Read returns the state and which copy it came from.
func (s Store) Read() (*bootstate.State, string, error) {
	p, perr := os.ReadFile(filepath.Join(s.Dir, bootstate.PrimaryPath))
	b, berr := os.ReadFile(filepath.Join(s.Dir, bootstate.BackupPath))
	if perr != nil && berr != nil {
		return nil, "", fmt.Errorf("read boot state: %w", errors.Join(perr, berr))
	}
	st, which, err := bootstate.Pick(p, b)
	if err != nil {
		return nil, "", fmt.Errorf("read boot state in %s: %w", s.Dir, err)
	}
	return st, which, nil
}

// Write stores st with a new generation in both copies, primary first.
func (s Store) Write(st *bootstate.State) error {
	st.Gen++
	block, err := st.Encode()
	if err != nil {
		return err
	}
	for _, p := range []string{bootstate.PrimaryPath, bootstate.BackupPath} {
		if err := writeInPlace(filepath.Join(s.Dir, p), block); err != nil {
			return fmt.Errorf("write boot state: %w", err)
		}
	}
	return nil
}

// Update reads the state, applies change and writes it back.
func (s Store) Update(change func(*bootstate.State) error) (*bootstate.State, error) {
	st, _, err := s.Read()
	if err != nil {
		return nil, err
	}
	if err := change(st); err != nil {
		return nil, err
	}
	return st, s.Write(st)
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

// Commit makes slot the committed default after a healthy boot.
func Commit(st *bootstate.State, slot string) {
	sl := st.Slot(slot)
	sl.Bootable, sl.Good, sl.Tries = true, true, 0
	st.Default, st.LastGood = slot, slot
}

// MarkBad makes slot unbootable and the other slot the default.
func MarkBad(st *bootstate.State, slot string) {
	sl := st.Slot(slot)
	sl.Bootable, sl.Good, sl.Tries = false, false, 0
	if slot == st.Default {
		st.Default = other(slot)
	}
}

func other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}
