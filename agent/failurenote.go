package main

import (
	"encoding/json"
	"fmt"
	"os"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/image/layout"
)

// failureNotePath keeps, across the reboot into the other slot, why a
// trial boot was given up, so the next boot can tell the operator.
const failureNotePath = keelDir + "/boot-failure.json"

type failureNote struct {
	Version string       `json:"version"`
	Slot    layout.Label `json:"slot"`
	Reason  string       `json:"reason"`
}

func (a *agent) noteFailure(slot layout.Label, reason string) error {
	if !a.dataMounted() {
		return fmt.Errorf("the data partition is not mounted")
	}
	b, err := json.Marshal(failureNote{Version: a.version(), Slot: slot, Reason: reason})
	if err != nil {
		return err
	}
	return atomicfile.Write(failureNotePath, b, 0o600)
}

// takeFailureNote returns the sentence about a trial boot given up before
// this boot, and forgets it. A note about the slot running now is stale
// (it was reinstalled and booted since) and is dropped.
func (a *agent) takeFailureNote() string {
	b, err := os.ReadFile(failureNotePath)
	if err != nil {
		return ""
	}
	os.Remove(failureNotePath)
	var n failureNote
	if json.Unmarshal(b, &n) != nil || n.Slot == a.boot0.Slot {
		return ""
	}
	return fmt.Sprintf("The trial boot of %s in slot %s %s; the box is back on %s in slot %s.", n.Version, n.Slot, n.Reason, a.version(), a.boot0.Slot)
}
