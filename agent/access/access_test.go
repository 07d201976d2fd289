package access

import (
	"errors"
	"net/netip"
	"path/filepath"
	"testing"

	"keel.dev/keel/agent/api"
)

func TestMostSpecificWinsAndNobodyLocksThemselvesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.json")
	s := &Store{Path: path}
	if err := s.Load(); err != nil {
		t.Fatal(err)
	}
	me := netip.MustParseAddr("10.1.2.3")
	if !s.Allowed(me) {
		t.Fatal("a new box refuses")
	}
	rules := Rules{Default: Reject, Accept: []string{"10.0.0.0/8", "192.0.2.7"}, Reject: []string{"10.1.0.0/16", "192.0.2.0/24"}}
	var fe api.FieldError
	if err := s.Set(rules, me); !errors.As(err, &fe) || fe.Field != "accept" {
		t.Fatalf("rules that shut out the client: %v", err)
	}
	rules.Accept = append(rules.Accept, "10.1.2.0/24")
	if err := s.Set(rules, me); err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"10.1.2.3":        true,  // the /24 accept beats the /16 reject
		"10.1.9.9":        false, // the /16 reject beats the /8 accept
		"10.200.0.1":      true,  // the /8 accept
		"192.0.2.7":       true,  // a single address beats its /24
		"192.0.2.8":       false,
		"198.51.100.1":    false, // the default
		"::ffff:10.2.0.1": true,
	} {
		if got := s.Allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: allowed %v, want %v", addr, got, want)
		}
	}
	// Equal specificity: reject wins.
	s2 := &Store{}
	s2.Set(Rules{Default: Accept, Accept: []string{"203.0.113.0/24"}, Reject: []string{"203.0.113.0/24"}}, netip.Addr{})
	if s2.Allowed(netip.MustParseAddr("203.0.113.5")) {
		t.Error("accept and reject of the same network: accepted")
	}
	if err := s.Set(Rules{Accept: []string{"not-a-network"}}, me); !errors.As(err, &fe) {
		t.Fatalf("a bad network: %v", err)
	}
	// The rules survive a restart; the console's reset opens everything.
	s3 := &Store{Path: path}
	if err := s3.Load(); err != nil || s3.Allowed(netip.MustParseAddr("198.51.100.1")) {
		t.Fatalf("after reload: %v", err)
	}
	if err := s3.Reset(); err != nil {
		t.Fatal(err)
	}
	s4 := &Store{Path: path}
	s4.Load()
	if !s4.Allowed(netip.MustParseAddr("198.51.100.1")) {
		t.Fatal("the reset did not open the interface")
	}
}
