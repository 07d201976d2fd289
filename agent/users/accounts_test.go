package users

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAccountsAddDisableDeleteAndTheirRules(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	s := openT(t, path, "")
	if err := s.Initialize("first-password", false); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("ops", "temporary-1"); err != nil {
		t.Fatal(err)
	}
	if !s.MustChange("ops") || !s.Verify("ops", "temporary-1") {
		t.Fatal("a new account logs in with its first password and must change it")
	}
	if err := s.Add("ops", "temporary-2"); !errors.Is(err, ErrUserExists) {
		t.Fatalf("second add: %v", err)
	}
	if err := s.Add("bad name", "temporary-2"); !errors.Is(err, ErrInvalidName) {
		t.Fatalf("bad name: %v", err)
	}
	if err := s.SetDisabled("ops", true, "ops"); !errors.Is(err, ErrSelf) {
		t.Fatalf("disabling oneself: %v", err)
	}
	if err := s.SetDisabled("ops", true, Admin); err != nil {
		t.Fatal(err)
	}
	if s.Verify("ops", "temporary-1") {
		t.Fatal("a disabled account still logs in")
	}
	// With ops disabled, admin is the only one who can log in.
	if err := s.SetDisabled(Admin, true, "ops"); !errors.Is(err, ErrLastAdmin) {
		t.Fatalf("disabling the last enabled account: %v", err)
	}
	if err := s.Delete(Admin, "ops"); !errors.Is(err, ErrRecoveryAccount) {
		t.Fatalf("deleting admin: %v", err)
	}
	// Everything survives a restart.
	s2 := openT(t, path, "")
	if got := s2.List(); len(got) != 2 || got[0].Name != Admin || got[1] != (Account{Name: "ops", Disabled: true, MustChange: true}) {
		t.Fatalf("after reopening: %+v", got)
	}
	if err := s2.SetDisabled("ops", false, Admin); err != nil {
		t.Fatal(err)
	}
	if err := s2.Reset("ops", "reset-by-admin"); err != nil {
		t.Fatal(err)
	}
	if s2.Verify("ops", "temporary-1") || !s2.Verify("ops", "reset-by-admin") || !s2.MustChange("ops") {
		t.Fatal("a reset password replaces the old one and must be changed")
	}
	if err := s2.Reset("nobody", "reset-by-admin"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("reset of an unknown user: %v", err)
	}
	if err := s2.Delete("ops", Admin); err != nil {
		t.Fatal(err)
	}
	if s2.Verify("ops", "reset-by-admin") || len(s2.List()) != 1 {
		t.Fatal("a deleted account still logs in")
	}
	if code, msg := Answer(s2.Delete("ops", Admin)); code != http.StatusNotFound || msg == "" {
		t.Fatalf("deleting twice answers %d %q", code, msg)
	}
}

func TestPolicyIsCheckedSavedAndApplied(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	s := openT(t, path, "")
	if err := s.Initialize("first-password", false); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	if strings.Contains(string(before), "policy") {
		t.Fatal("the default policy is written out; files from before policies would read differently")
	}
	p := s.Policy()
	if p != DefaultPolicy {
		t.Fatalf("policy of a new store: %+v", p)
	}
	bad := p
	bad.SessionIdleMinutes = 0
	var pe *PolicyError
	if err := s.SetPolicy(bad); !errors.As(err, &pe) || pe.Field != "session_idle_minutes" {
		t.Fatalf("idle 0: %v", err)
	}
	bad = p
	bad.SessionAbsoluteMinutes, bad.SessionIdleMinutes = 10, 20
	if err := s.SetPolicy(bad); !errors.As(err, &pe) || pe.Field != "session_absolute_minutes" {
		t.Fatalf("absolute below idle: %v", err)
	}
	p.MinLength, p.LockoutThreshold, p.LockoutMinutes = 12, 4, 30
	if err := s.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("ops", "eleven-char"); !errors.Is(err, ErrInvalidPassword) || !strings.Contains(err.Error(), "12") {
		t.Fatalf("a password under the new minimum: %v", err)
	}
	if !s.Verify(Admin, "first-password") {
		t.Fatal("a longer minimum locked out a password already set")
	}
	if got := openT(t, path, "").Policy(); got != p {
		t.Fatalf("after reopening: %+v, want %+v", got, p)
	}
	if n, d := p.Lockout(); n != 4 || d.Minutes() != 30 {
		t.Fatalf("lockout %d %v", n, d)
	}
}
