package kpkg

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	good := map[string]Version{
		"0.0.0":                     {},
		"1.2.3":                     {Major: 1, Minor: 2, Patch: 3},
		"3.3.2-rc.1":                {Major: 3, Minor: 3, Patch: 2, Pre: "rc.1"},
		"1.0.0-0.3.7":               {Major: 1, Pre: "0.3.7"},
		"1.0.0-x-y.1+build.007":     {Major: 1, Pre: "x-y.1", Build: "build.007"},
		"18446744073709551615.0.0":  {Major: 1<<64 - 1},
		"1.0.0+20261127.sha.5114f8": {Major: 1, Build: "20261127.sha.5114f8"},
	}
	for s, want := range good {
		got, err := ParseVersion(s)
		if err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %+v, %v; want %+v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("ParseVersion(%q).String() = %q", s, got.String())
		}
	}
	bad := []string{"", "1", "1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.02.3", "1.2.03", "1.2.x",
		"-1.2.3", "1.2.3-", "1.2.3+", "1.2.3-01", "1.2.3-a..b", "1.2.3-a_b", "1.2.3+a b",
		"18446744073709551616.0.0", " 1.2.3", "1.2.3 ", "1.2.3-é"}
	for _, s := range bad {
		if v, err := ParseVersion(s); err == nil {
			t.Errorf("ParseVersion(%q) = %v, want an error", s, v)
		} else if !strings.Contains(err.Error(), "version") {
			t.Errorf("ParseVersion(%q): error %q does not say version", s, err)
		}
	}
}

// The precedence example of semver.org 2.0.0 §11, plus numbers beyond
// uint64 and build metadata that does not count.
func TestCompare(t *testing.T) {
	order := []string{
		"0.9.99", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
		"1.0.0-beta.11", "1.0.0-beta.99999999999999999999", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0", "10.0.0",
	}
	for i, a := range order {
		for j, b := range order {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := MustParseVersion(a).Compare(MustParseVersion(b)); got != want {
				t.Errorf("%s vs %s: %d, want %d", a, b, got, want)
			}
		}
	}
	if c := MustParseVersion("1.0.0+a").Compare(MustParseVersion("1.0.0+b")); c != 0 {
		t.Errorf("build metadata counted: %d", c)
	}
}

func TestVersionJSON(t *testing.T) {
	var v struct{ V Version }
	if err := json.Unmarshal([]byte(`{"V":"3.3.2-rc.1"}`), &v); err != nil || v.V.String() != "3.3.2-rc.1" {
		t.Fatalf("%v %v", v.V, err)
	}
	b, _ := json.Marshal(v)
	if string(b) != `{"V":"3.3.2-rc.1"}` {
		t.Fatalf("marshal: %s", b)
	}
	for _, in := range []string{`{"V":"3.3"}`, `{"V":3}`, `{"V":null}`} {
		v.V = Version{}
		if err := json.Unmarshal([]byte(in), &v); err == nil && in != `{"V":null}` {
			t.Errorf("%s accepted", in)
		}
	}
}
