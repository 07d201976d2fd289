package users

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// countHashes makes s count its argon2 hashings.
func countHashes(s *Store) *atomic.Int64 {
	var n atomic.Int64
	inner := s.kdf
	s.kdf = func(pw, salt []byte, p params, l uint32) []byte {
		n.Add(1)
		return inner(pw, salt, p, l)
	}
	return &n
}

func openT(t *testing.T, path, mirror string) *Store {
	t.Helper()
	s, err := Open(path, mirror)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFirstBootAndPersistence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users.json")
	s := openT(t, path, "")
	if s.Exists() || s.MustChange(Admin) {
		t.Fatal("empty store claims credentials")
	}
	if s.Verify(Admin, "anything-at-all") {
		t.Fatal("empty store verified a password")
	}
	if err := s.Initialize("first-password", true); err != nil {
		t.Fatal(err)
	}
	if err := s.Initialize("second-password", false); !errors.Is(err, ErrExists) {
		t.Fatalf("second Initialize: %v, want ErrExists", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !regexp.MustCompile(`"hash": "\$argon2id\$v=19\$m=16384,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}"`).Match(data) {
		t.Errorf("stored hash not in the expected form:\n%s", data)
	}
	if bytes.Contains(data, []byte("first-password")) {
		t.Error("password stored in clear")
	}

	s2 := openT(t, path, "")
	if !s2.Exists() || !s2.MustChange(Admin) {
		t.Fatal("state not persisted")
	}
	if !s2.Verify(Admin, "first-password") {
		t.Fatal("right password refused after reopening")
	}
	if s2.Verify(Admin, "first-passwore") || s2.Verify("root", "first-password") || s2.Verify(Admin, "") {
		t.Fatal("wrong credentials accepted")
	}
}

func TestSetPassword(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	s := openT(t, path, "")
	if err := s.Initialize("initial-pass", true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, user, old, new string
		want                 error
	}{
		{"wrong old", Admin, "nope-nope-nope", "brand-new-pass", ErrWrongPassword},
		{"unknown user", "bob", "initial-pass", "brand-new-pass", ErrWrongPassword},
		{"too short", Admin, "initial-pass", "short", ErrInvalidPassword},
		{"control char", Admin, "initial-pass", "tab\there-123", ErrInvalidPassword},
		{"same", Admin, "initial-pass", "initial-pass", ErrInvalidPassword},
	} {
		if err := s.SetPassword(tc.user, tc.old, tc.new); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if !s.MustChange(Admin) {
		t.Fatal("failed changes cleared must-change")
	}
	if err := s.SetPassword(Admin, "initial-pass", "brand-new-pass"); err != nil {
		t.Fatal(err)
	}
	if s.MustChange(Admin) {
		t.Error("must-change still set after a change")
	}
	if s.Verify(Admin, "initial-pass") {
		t.Error("old password still accepted")
	}
	if !s.Verify(Admin, "brand-new-pass") {
		t.Error("new password refused")
	}
	if s2 := openT(t, path, ""); s2.MustChange(Admin) || !s2.Verify(Admin, "brand-new-pass") {
		t.Error("change not persisted")
	}
}

func TestVerifyCache(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "users.json"), "")
	if err := s.Initialize("cached-password", false); err != nil {
		t.Fatal(err)
	}
	n := countHashes(s)
	for range 5 {
		if !s.Verify(Admin, "cached-password") {
			t.Fatal("right password refused")
		}
	}
	if got := n.Load(); got != 1 {
		t.Errorf("5 right verifications hashed %d times, want 1", got)
	}
	for range 3 {
		s.Verify(Admin, "wrong-password")
		s.Verify("nobody", "cached-password")
	}
	if got := n.Load(); got != 7 {
		t.Errorf("6 wrong verifications brought hashings to %d, want 7: each must hash", got)
	}
	// The cache must not outlive the password.
	if err := s.SetPassword(Admin, "cached-password", "another-password"); err != nil {
		t.Fatal(err)
	}
	if s.Verify(Admin, "cached-password") {
		t.Error("old password accepted from cache")
	}
}

func TestConcurrentVerify(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "users.json"), "")
	if err := s.Initialize("parallel-pass", false); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			pw := "parallel-pass"
			if i%2 == 1 {
				pw = "wrong-pass-123"
			}
			if got := s.Verify(Admin, pw); got != (i%2 == 0) {
				t.Errorf("Verify(%q) = %v", pw, got)
			}
		})
	}
	wg.Wait()
}

func TestMirror(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "data", "users.json")
	mirror := filepath.Join(dir, "esp", "users.json")
	s := openT(t, path, mirror)
	if err := s.Initialize("mirror-pass-1", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword(Admin, "mirror-pass-1", "mirror-pass-2"); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(path)
	b, err := os.ReadFile(mirror)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("mirror differs from the main file (%v)", err)
	}

	ro, err := OpenReadOnly(mirror)
	if err != nil {
		t.Fatal(err)
	}
	if !ro.Verify(Admin, "mirror-pass-2") {
		t.Error("read-only mirror refused the current password")
	}
	if err := ro.SetPassword(Admin, "mirror-pass-2", "mirror-pass-3"); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only change: %v, want ErrReadOnly", err)
	}
	if err := ro.Initialize("mirror-pass-3", false); !errors.Is(err, ErrReadOnly) {
		t.Errorf("read-only Initialize: %v, want ErrReadOnly", err)
	}

	// A stale mirror is brought up to date by SyncMirror.
	os.Remove(mirror)
	if err := s.SyncMirror(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(mirror); !bytes.Equal(a, b) {
		t.Error("SyncMirror did not restore the mirror")
	}
}

func TestMirrorFailureStillChangesPassword(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "not-a-folder")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, filepath.Join(dir, "users.json"), filepath.Join(blocker, "users.json"))
	err := s.Initialize("mirror-fail-1", false)
	if !errors.Is(err, ErrMirror) {
		t.Fatalf("err = %v, want ErrMirror", err)
	}
	if !s.Exists() || !s.Verify(Admin, "mirror-fail-1") {
		t.Error("the change did not take effect")
	}
}

func TestCorruptFile(t *testing.T) {
	for name, content := range map[string]string{
		"not json":       "{",
		"future version": `{"version":2,"users":{}}`,
		"bad hash":       `{"version":1,"users":{"admin":{"hash":"$2a$10$abc"}}}`,
		"huge memory":    `{"version":1,"users":{"admin":{"hash":"$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"}}}`,
		"bad name":       `{"version":1,"users":{"a:b":{"hash":"$argon2id$v=19$m=16384,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, "")
			if err == nil {
				t.Fatal("corrupt file accepted")
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error does not name the file: %v", err)
			}
			if _, err := OpenReadOnly(path); err == nil {
				t.Error("corrupt file accepted read-only")
			}
		})
	}
}

func TestResetPassword(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "users.json"), "")
	if err := s.Initialize("forgotten-pass", false); err != nil {
		t.Fatal(err)
	}
	if err := s.ResetPassword(Admin, "reset-pass-123", true); err != nil {
		t.Fatal(err)
	}
	if s.Verify(Admin, "forgotten-pass") || !s.Verify(Admin, "reset-pass-123") || !s.MustChange(Admin) {
		t.Error("reset did not take effect")
	}
}

func TestGeneratePassword(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$`)
	seen := map[string]bool{}
	for range 100 {
		pw, err := GeneratePassword()
		if err != nil {
			t.Fatal(err)
		}
		if !re.MatchString(pw) {
			t.Fatalf("%q is not 4 groups of 4 unambiguous characters", pw)
		}
		if err := ValidatePassword(pw); err != nil {
			t.Fatalf("generated password %q fails validation: %v", pw, err)
		}
		if seen[pw] {
			t.Fatalf("duplicate %q", pw)
		}
		seen[pw] = true
	}
	if len(passwordAlphabet) != 32 || strings.ContainsAny(passwordAlphabet, "ilou") {
		t.Fatal("alphabet must be 32 unambiguous symbols")
	}
}

func TestHashRoundTrip(t *testing.T) {
	hs, err := newHash(argon2id, "round-trip", defaultParams)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHash(hs)
	if err != nil {
		t.Fatal(err)
	}
	if h.String() != hs {
		t.Errorf("%s re-encodes as %s", hs, h.String())
	}
	if !h.matches(argon2id, "round-trip") || h.matches(argon2id, "round-trap") {
		t.Error("hash does not match correctly")
	}
	for _, bad := range []string{
		strings.Replace(hs, "v=19", "v=19x", 1),
		strings.Replace(hs, "p=1", "p=1junk", 1),
		strings.Replace(hs, "t=1", "t=0", 1),
		strings.Replace(hs, "argon2id", "argon2i", 1),
	} {
		if _, err := parseHash(bad); err == nil {
			t.Errorf("parseHash(%q) accepted", bad)
		}
	}
}

// A generated password is stored without stretching (80 random bits need
// none) and must be changed; the password the admin then chooses is
// stretched.
func TestGeneratedPasswordIsHashedCheaply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users.json")
	s := openT(t, path, "")
	pw, err := GeneratePassword()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InitializeGenerated(pw); err != nil {
		t.Fatal(err)
	}
	if err := s.InitializeGenerated(pw); !errors.Is(err, ErrExists) {
		t.Fatalf("second InitializeGenerated: %v, want ErrExists", err)
	}
	data, _ := os.ReadFile(path)
	if !bytes.Contains(data, []byte(`$argon2id$v=19$m=8,t=1,p=1$`)) {
		t.Errorf("generated password's hash not with the minimal cost:\n%s", data)
	}
	if !s.MustChange(Admin) || !s.Verify(Admin, pw) || s.Verify(Admin, pw+"x") {
		t.Fatalf("generated password: must change %v, verifies %v", s.MustChange(Admin), s.Verify(Admin, pw))
	}
	if err := s.SetPassword(Admin, pw, "chosen-by-the-admin"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if !bytes.Contains(data, []byte(`$argon2id$v=19$m=16384,t=1,p=1$`)) {
		t.Errorf("the chosen password's hash not with the full cost:\n%s", data)
	}
}

// An image preseeds the hash HashPassword made on the build host: the box
// verifies the password without having seen it, and refuses a damaged
// hash and a password HashPassword would not take.
func TestPreseededHash(t *testing.T) {
	if _, err := HashPassword(""); err == nil {
		t.Error("HashPassword took an empty password")
	}
	h, err := HashPassword("preseeded-pw")
	if err != nil {
		t.Fatal(err)
	}
	s := openT(t, filepath.Join(t.TempDir(), "users.json"), "")
	if err := s.InitializeHashed("$argon2id$v=19$m=16384,t=1,p=1$broken", false); err == nil || s.Exists() {
		t.Fatalf("a damaged hash was taken (%v)", err)
	}
	if err := s.InitializeHashed(h, false); err != nil {
		t.Fatal(err)
	}
	if s.MustChange(Admin) || !s.Verify(Admin, "preseeded-pw") || s.Verify(Admin, "preseeded-px") {
		t.Fatal("the preseeded password does not verify as set")
	}
}
