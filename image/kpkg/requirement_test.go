package kpkg

import (
	"testing"
)

func TestParseRequirement(t *testing.T) {
	good := map[string]string{
		"base >= 3.3.2":   "base >= 3.3.2",
		"app>=12.1.0":     "app >= 12.1.0",
		" base < 4.0.0 ":  "base < 4.0.0",
		"app == 1.0.0":    "app = 1.0.0",
		"app = 1.0.0-rc1": "app = 1.0.0-rc1",
		"base > 1.0.0":    "base > 1.0.0",
		"base <= 1.0.0":   "base <= 1.0.0",
	}
	for in, want := range good {
		r, err := ParseRequirement(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseRequirement(%q) = %q, %v; want %q", in, r, err, want)
		}
	}
	for _, in := range []string{"", "base", "base 3.3.2", "kernel >= 1.0.0", "base => 1.0.0", "base != 1.0.0",
		"base >= 3.3", ">= 1.0.0", "base >=< 1.0.0"} {
		if r, err := ParseRequirement(in); err == nil {
			t.Errorf("ParseRequirement(%q) = %v, want an error", in, r)
		}
	}
}

func TestRequirementCheck(t *testing.T) {
	installed := map[Kind]Version{KindBase: MustParseVersion("3.2.4"), KindApp: MustParseVersion("12.1.0")}
	tests := []struct {
		req  string
		want string // "" when it holds
	}{
		{"base >= 3.3.2", "requires base >= 3.3.2; installed 3.2.4"},
		{"base >= 3.2.4", ""},
		{"base > 3.2.4", "requires base > 3.2.4; installed 3.2.4"},
		{"base < 3.3.0", ""},
		{"base <= 3.2.4-rc.1", "requires base <= 3.2.4-rc.1; installed 3.2.4"},
		{"base >= 3.2.4-rc.1", ""},
		{"app = 12.1.0", ""},
		{"app = 12.1.1", "requires app = 12.1.1; installed 12.1.0"},
	}
	for _, tc := range tests {
		err := mustReq(t, tc.req).Check(installed)
		if got := errText(err); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.req, got, tc.want)
		}
	}
	err := mustReq(t, "app >= 1.0.0").Check(map[Kind]Version{KindBase: MustParseVersion("1.0.0")})
	if got := errText(err); got != "requires app >= 1.0.0; no app is installed" {
		t.Errorf("nothing installed: %q", got)
	}

	m := testManifest()
	m.Requires = []Requirement{mustReq(t, "base >= 3.0.0"), mustReq(t, "app >= 12.2.0"), mustReq(t, "base >= 9.0.0")}
	if got := errText(m.CheckRequirements(installed)); got != "requires app >= 12.2.0; installed 12.1.0" {
		t.Errorf("CheckRequirements: %q", got)
	}
	m.Requires = nil
	if err := m.CheckRequirements(nil); err != nil {
		t.Errorf("no requirements: %v", err)
	}
}

func TestCheckHardware(t *testing.T) {
	m := testManifest()
	if err := m.CheckHardware("kx-100"); err != nil {
		t.Error(err)
	}
	want := `base keel 1.2.3 is for hardware "keel-vm", "kx-100"; this box is "kx-200"`
	if got := errText(m.CheckHardware("kx-200")); got != want {
		t.Errorf("%q, want %q", got, want)
	}
	m.Hardware = nil
	if err := m.CheckHardware("anything"); err != nil {
		t.Errorf("no hardware list: %v", err)
	}
}

func mustReq(t *testing.T, s string) Requirement {
	t.Helper()
	r, err := ParseRequirement(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
