// Package users keeps the appliance's accounts (admin, the recovery
// account, and any others an administrator adds; every account is an
// administrator) and the account policy: argon2id password hashes in a
// small JSON file, optionally
// mirrored to a second path so that recovery mode can still check the admin
// password when the data partition is damaged.
package users

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"sync"

	"keel.dev/keel/agent/atomicfile"
)

// Admin is the administrator's user name.
const Admin = "admin"

var (
	// ErrWrongPassword: the user is unknown or the current password is not
	// theirs (deliberately not told apart).
	ErrWrongPassword = errors.New("the current password is wrong; check it and try again")
	// ErrExists: Initialize on a store that already has credentials.
	ErrExists = errors.New("admin credentials already exist; change the password instead")
	// ErrReadOnly: a change through a store from OpenReadOnly.
	ErrReadOnly = errors.New("the credentials were opened read-only; open them read-write to change them")
	// ErrMirror wraps a failure to update the mirror after the main file was
	// saved: the change took effect, only recovery mode may still know the
	// old password.
	ErrMirror = errors.New("the change was saved, but the copy for recovery mode was not updated")
)

// maxConcurrentHashes bounds argon2's memory use (16 MiB per hashing) when
// many wrong passwords arrive at once.
const maxConcurrentHashes = 2

// Store is the set of users. It is safe for concurrent use.
type Store struct {
	path, mirror string
	readOnly     bool
	kdf          kdf
	hashSlots    chan struct{}

	// writeMu serialises changes end to end (verify, hash, save), so two
	// password changes cannot interleave.
	writeMu sync.Mutex

	mu    sync.RWMutex
	users map[string]user
	// policy is the account rules; it is saved in the same file.
	policy Policy
	// cache holds, per user, a MAC of the last credentials that verified.
	// Keyed with a random per-process key so that a memory dump does not give
	// a fast offline check of the password.
	cache    map[string][]byte
	cacheKey []byte
}

// Open loads the users file at path (a missing file means no users yet:
// first boot). mirror, if not "", is a second path the same content is
// written to on every change.
func Open(path, mirror string) (*Store, error) {
	return open(path, mirror, false)
}

// OpenReadOnly loads the users file for checking passwords only, such as the
// mirror from recovery mode. Changes return ErrReadOnly.
func OpenReadOnly(path string) (*Store, error) {
	return open(path, "", true)
}

func open(path, mirror string, readOnly bool) (*Store, error) {
	c, err := readUsers(path)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("users: cache key: %w", err)
	}
	return &Store{
		path:      path,
		mirror:    mirror,
		readOnly:  readOnly,
		kdf:       argon2id,
		hashSlots: make(chan struct{}, maxConcurrentHashes),
		users:     c.users,
		policy:    c.policy,
		cache:     map[string][]byte{},
		cacheKey:  key,
	}, nil
}

// Exists reports whether admin credentials have been set up.
func (s *Store) Exists() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.users[Admin]
	return ok
}

// MustChange reports whether name must choose a new password before doing
// anything else (after first boot, when an administrator made the account
// or reset its password).
func (s *Store) MustChange(name string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.users[name].mustChange
}

// Verify reports whether password is user's. A repeat of the last correct
// credentials is answered from memory in microseconds; anything else pays
// the full hashing cost, including unknown users, so timing does not tell
// which users exist.
func (s *Store) Verify(name, password string) bool {
	s.mu.RLock()
	u, ok := s.users[name]
	cached := s.cache[name]
	s.mu.RUnlock()
	if !ok || u.disabled {
		s.matches(hash{p: defaultParams, salt: make([]byte, saltLen), key: make([]byte, keyLen)}, password)
		return false
	}
	mac := s.mac(name, u.hashString, password)
	if cached != nil && subtle.ConstantTimeCompare(cached, mac) == 1 {
		return true
	}
	if !s.matches(u.hash, password) {
		return false
	}
	s.mu.Lock()
	// Only cache if the password was not changed while we were hashing.
	if cur, ok := s.users[name]; ok && cur.hashString == u.hashString {
		s.cache[name] = mac
	}
	s.mu.Unlock()
	return true
}

// Known says whether name and password are the credentials that last
// verified for name, by their MAC alone: no hashing, so the API can let
// them pass ahead of a queue of guesses.
func (s *Store) Known(name, password string) bool {
	s.mu.RLock()
	u, ok := s.users[name]
	cached := s.cache[name]
	s.mu.RUnlock()
	if !ok || cached == nil || u.disabled {
		return false
	}
	return subtle.ConstantTimeCompare(cached, s.mac(name, u.hashString, password)) == 1
}

func (s *Store) matches(h hash, password string) bool {
	s.hashSlots <- struct{}{}
	defer func() { <-s.hashSlots }()
	return h.matches(s.kdf, password)
}

func (s *Store) mac(name, hashString, password string) []byte {
	m := hmac.New(sha256.New, s.cacheKey)
	// Length-prefixed so that no two different triples produce the same input.
	for _, part := range []string{name, hashString, password} {
		fmt.Fprintf(m, "%d:", len(part))
		m.Write([]byte(part))
	}
	return m.Sum(nil)
}

// Initialize sets up the admin account on first boot. mustChange forces a
// new password at first login.
func (s *Store) Initialize(password string, mustChange bool) error {
	return s.initializeWith(password, defaultParams, mustChange)
}

// InitializeGenerated sets up the admin account on first boot with a
// password from GeneratePassword, which must be changed at first login.
// Its 80 random bits are hashed without stretching (generatedParams).
func (s *Store) InitializeGenerated(password string) error {
	return s.initializeWith(password, generatedParams, true)
}

func (s *Store) initializeWith(password string, p params, mustChange bool) error {
	if err := s.validate(password); err != nil {
		return err
	}
	hs, err := newHash(s.kdf, password, p)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	return s.InitializeHashed(hs, mustChange)
}

// InitializeHashed sets up the admin account on first boot from a hash
// HashPassword made, as an image preseeds it.
func (s *Store) InitializeHashed(hashString string, mustChange bool) error {
	if s.readOnly {
		return ErrReadOnly
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.Exists() {
		return ErrExists
	}
	return s.saveHashLocked(Admin, hashString, mustChange)
}

// SetPassword changes user's password after checking the current one. It
// clears the must-change flag.
func (s *Store) SetPassword(name, oldPassword, newPassword string) error {
	if s.readOnly {
		return ErrReadOnly
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if !s.Verify(name, oldPassword) {
		return ErrWrongPassword
	}
	if err := s.validate(newPassword); err != nil {
		return err
	}
	if newPassword == oldPassword {
		return fmt.Errorf("%w: choose a password different from the current one", ErrInvalidPassword)
	}
	return s.setLocked(name, newPassword, false)
}

// ResetPassword sets user's password without knowing the current one, for
// the recovery menu (whose own access is the admin password or physical
// presence) and for an administrator resetting another's. It enables the
// account (the recovery menu's way back into a disabled admin);
// mustChange forces another change at next login.
func (s *Store) ResetPassword(name, password string, mustChange bool) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if !validName(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	if err := s.validate(password); err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.setLocked(name, password, mustChange)
}

// setLocked hashes password, saves, and only then updates memory, so a
// failed save changes nothing. Callers hold writeMu.
func (s *Store) setLocked(name, password string, mustChange bool) error {
	hs, err := newHash(s.kdf, password, defaultParams)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	return s.saveHashLocked(name, hs, mustChange)
}

// saveHashLocked stores a hash string made by newHash or HashPassword
// (parsed again: a preseeded one comes from a file). Callers hold writeMu.
func (s *Store) saveHashLocked(name, hs string, mustChange bool) error {
	h, err := parseHash(hs)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	return s.changeLocked(name, func(c *contents) error {
		c.users[name] = user{hashString: hs, hash: h, mustChange: mustChange}
		return nil
	})
}

// changeLocked applies change to a copy of the contents, saves it, and
// only then takes it into memory, so a failed save changes nothing. It
// forgets the cached login of the account changed (name; "" for none), so
// the others' scripts keep their fast path. Callers hold writeMu.
func (s *Store) changeLocked(name string, change func(c *contents) error) error {
	s.mu.RLock()
	next := contents{users: make(map[string]user, len(s.users)+1), policy: s.policy}
	for n, u := range s.users {
		next.users[n] = u
	}
	s.mu.RUnlock()
	if err := change(&next); err != nil {
		return err
	}
	data := encodeUsers(next)
	if err := atomicfile.Write(s.path, data, 0o600); err != nil {
		return fmt.Errorf("users: save credentials: %w", err)
	}
	s.mu.Lock()
	s.users, s.policy = next.users, next.policy
	delete(s.cache, name)
	s.mu.Unlock()
	if s.mirror != "" {
		if err := atomicfile.Write(s.mirror, data, 0o600); err != nil {
			return fmt.Errorf("users: %w: %v", ErrMirror, err)
		}
	}
	return nil
}

// Reload reads the users file again after something else replaced it (a
// failover backup's sync), drops the verified-credentials cache and
// brings the mirror up to date. A file that cannot be read leaves the
// accounts as they were.
func (s *Store) Reload() error {
	c, err := readUsers(s.path)
	if err != nil {
		return err
	}
	s.writeMu.Lock()
	s.mu.Lock()
	s.users, s.policy = c.users, c.policy
	s.cache = map[string][]byte{}
	s.mu.Unlock()
	s.writeMu.Unlock()
	return s.SyncMirror()
}

// SyncMirror rewrites the mirror if it differs from the main file, e.g.
// after an earlier ErrMirror or a restored backup. Call it at boot.
func (s *Store) SyncMirror() error {
	if s.readOnly || s.mirror == "" {
		return nil
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	if len(s.users) == 0 {
		s.mu.RUnlock()
		return nil // nothing to protect yet; leave whatever is there alone
	}
	data := encodeUsers(contents{users: s.users, policy: s.policy})
	s.mu.RUnlock()
	if cur, err := os.ReadFile(s.mirror); err == nil && bytes.Equal(cur, data) {
		return nil
	}
	if err := atomicfile.Write(s.mirror, data, 0o600); err != nil {
		return fmt.Errorf("users: %w: %v", ErrMirror, err)
	}
	return nil
}
