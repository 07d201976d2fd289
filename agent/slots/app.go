package slots

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"sync"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/image/layout"
)

// AppState is what the box remembers about its application slots, in the
// app state file (written atomically). Active changes in two steps, as a
// base slot's default does: StageTrial records the new slot uncommitted,
// with Previous naming the slot to go back to, and Commit makes it good
// once the application passed its health check. A box that restarts with
// an uncommitted slot goes back to Previous (RecordFallback).
type AppState struct {
	Active    layout.Label `json:"active"`    // "" when no application is installed
	Committed bool         `json:"committed"` // Active passed its health check
	// Previous is, while Active is on trial, the committed slot to go back
	// to ("" when there was none).
	Previous layout.Label             `json:"previous,omitempty"`
	Slots    map[layout.Label]AppSlot `json:"slots,omitempty"` // what each slot holds
	// LastResult is a sentence on the last switch or recovery.
	LastResult string `json:"last_result,omitempty"`
}

// AppSlot is what an application slot holds.
type AppSlot struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	// Failed: this version failed its health check and was switched away
	// from.
	Failed bool `json:"failed,omitempty"`
}

// Slot is what slot l holds.
func (st AppState) Slot(l layout.Label) AppSlot { return st.Slots[l] }

// CommittedSlot is the slot of the committed application: Active once
// committed, Previous during a trial, "" when none is.
func (st AppState) CommittedSlot() layout.Label {
	if !st.Committed {
		return st.Previous
	}
	return st.Active
}

func (st *AppState) set(l layout.Label, info AppSlot) {
	if st.Slots == nil {
		st.Slots = map[layout.Label]AppSlot{}
	}
	st.Slots[l] = info
}

func (st AppState) clone() AppState {
	st.Slots = maps.Clone(st.Slots)
	return st
}

// AppStore owns the app state file at Path. Load it once; every change
// goes through its transitions, under its lock, and is written before it
// is seen.
type AppStore struct {
	Path string

	mu sync.Mutex
	st AppState
}

// NewAppStore is the store of the app state file at path.
func NewAppStore(path string) *AppStore { return &AppStore{Path: path} }

// Load reads the file; a missing one is an empty state.
func (s *AppStore) Load() (AppState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st AppState
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		s.st = st
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("application state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return AppState{}, fmt.Errorf("application state %s is damaged: %w", s.Path, err)
	}
	for _, l := range []layout.Label{st.Active, st.Previous} {
		if l != "" && !l.Valid() {
			return AppState{}, fmt.Errorf("application state %s names slot %q", s.Path, l)
		}
	}
	s.st = st
	return st.clone(), nil
}

// State is the state as last loaded or written.
func (s *AppStore) State() AppState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.clone()
}

func (s *AppStore) update(change func(*AppState) error) (AppState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st.clone()
	if err := change(&st); err != nil {
		return s.st.clone(), err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return s.st.clone(), err
	}
	if err := atomicfile.Write(s.Path, append(b, '\n'), 0o600); err != nil {
		return s.st.clone(), fmt.Errorf("write the application state: %w", err)
	}
	s.st = st
	return st.clone(), nil
}

// MarkUnbootable forgets what slot l held before an install writes it. It
// refuses the slot the committed application runs from.
func (s *AppStore) MarkUnbootable(l layout.Label) (AppState, error) {
	return s.update(func(st *AppState) error {
		if l == st.CommittedSlot() || l == st.Active {
			return fmt.Errorf("application slot %s holds the application in use; install into the other slot", l)
		}
		delete(st.Slots, l)
		return nil
	})
}

// StageTrial records a switch to slot l, written with version: l is
// active, uncommitted, and the committed slot (if any) is Previous.
func (s *AppStore) StageTrial(l layout.Label, version string) (AppState, error) {
	return s.update(func(st *AppState) error {
		old := st.CommittedSlot()
		if l == old {
			return fmt.Errorf("application slot %s runs the current application; install into the other slot", l)
		}
		st.Active, st.Committed, st.Previous = l, false, old
		st.set(l, AppSlot{Version: version})
		return nil
	})
}

// Commit makes slot l, running name version, the committed application.
func (s *AppStore) Commit(l layout.Label, name, version, result string) (AppState, error) {
	return s.update(func(st *AppState) error {
		st.Active, st.Committed, st.Previous = l, true, ""
		st.set(l, AppSlot{Name: name, Version: version})
		st.LastResult = result
		return nil
	})
}

// MarkBad records that slot l (name version; name may be unknown) failed
// and goes back to the slot committed before it, if any.
func (s *AppStore) MarkBad(l layout.Label, name, version, result string) (AppState, error) {
	return s.update(func(st *AppState) error {
		back := st.Previous
		if st.Active != l {
			back = st.CommittedSlot()
		}
		st.Active, st.Committed, st.Previous = back, back != "", ""
		st.set(l, AppSlot{Name: name, Version: version, Failed: true})
		st.LastResult = result
		return nil
	})
}

// RecordFallback is MarkBad for a trial the box restarted in: it returns
// the sentence it recorded, or "" when nothing was on trial.
func (s *AppStore) RecordFallback() (string, error) {
	st := s.State()
	if st.Active == "" || st.Committed {
		return "", nil
	}
	failed, back := st.Slot(st.Active), st.Previous
	what := "no application runs"
	if back != "" {
		what = "back on " + st.Slot(back).Version
	}
	result := fmt.Sprintf("app %s was not committed: the box restarted before its health check passed; %s", failed.Version, what)
	_, err := s.MarkBad(st.Active, failed.Name, failed.Version, result)
	return result, err
}
