package apps

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"keel.dev/keel/agent/atomicfile"
)

// State is what the box remembers about its applications, in the state
// file (written atomically). Active changes in two steps: a switch records
// the new slot uncommitted, with Previous naming the slot to go back to,
// and commits it once the application passed its health check. A box that
// restarts with an uncommitted slot goes back to Previous.
type State struct {
	Active    string `json:"active"`    // "a", "b", or "" when no application is installed
	Committed bool   `json:"committed"` // Active passed its health check
	// Previous is, while Active is on trial, the committed slot to go back
	// to ("" when there was none).
	Previous string              `json:"previous,omitempty"`
	Slots    map[string]SlotInfo `json:"slots,omitempty"` // what each slot holds, "a" and "b"
	// LastResult is a sentence on the last switch or recovery.
	LastResult string `json:"last_result,omitempty"`
	// LastInstall is when an application was last committed by a switch.
	LastInstall time.Time `json:"last_install,omitzero"`
}

// SlotInfo is what an application slot holds.
type SlotInfo struct {
	Name    string `json:"name,omitempty"`
	Version string `json:"version,omitempty"`
	// Failed: this version failed its health check and was switched away
	// from.
	Failed bool `json:"failed,omitempty"`
}

func readState(path string) (State, error) {
	var st State
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("application state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("application state %s is damaged: %w", path, err)
	}
	switch st.Active {
	case "", "a", "b":
	default:
		return State{}, fmt.Errorf("application state %s names slot %q", path, st.Active)
	}
	return st, nil
}

func writeState(path string, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

func (st *State) slot(s string) SlotInfo {
	if st.Slots == nil {
		return SlotInfo{}
	}
	return st.Slots[s]
}

func (st *State) setSlot(s string, info SlotInfo) {
	if st.Slots == nil {
		st.Slots = map[string]SlotInfo{}
	}
	st.Slots[s] = info
}

func (st State) clone() State {
	c := st
	c.Slots = make(map[string]SlotInfo, len(st.Slots))
	for k, v := range st.Slots {
		c.Slots[k] = v
	}
	return c
}
