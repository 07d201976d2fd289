package kpkg

import (
	"strings"
	"testing"
)

func TestFloorIsForBasesAndNotAboveTheVersion(t *testing.T) {
	m := Manifest{Format: FormatVersion, Kind: KindBase, Name: "keel", Version: MustParseVersion("2.0.0"),
		Payload: Payload{Size: 1, SHA256: strings.Repeat("0", 64)}, Floor: MustParseVersion("1.5.0")}
	if err := m.Validate(); err != nil {
		t.Fatalf("a base with a floor below it: %v", err)
	}
	m.Floor = MustParseVersion("2.0.1")
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "above the package's own version") {
		t.Errorf("a floor above the version: %v", err)
	}
	m.Kind, m.Floor = KindApp, MustParseVersion("1.0.0")
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "only a base package") {
		t.Errorf("an app with a floor: %v", err)
	}
}
