package users

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// fileVersion is the users file's format version; a newer one is refused
// rather than misread.
const fileVersion = 1

// file is the users file on disk.
type file struct {
	Version int                  `json:"version"`
	Users   map[string]fileEntry `json:"users"`
	// Policy is absent in files written before it existed: the defaults.
	Policy *Policy `json:"policy,omitempty"`
}

type fileEntry struct {
	Hash       string `json:"hash"`
	MustChange bool   `json:"must_change,omitempty"`
	Disabled   bool   `json:"disabled,omitempty"`
}

// user is a loaded entry.
type user struct {
	hashString string
	hash       hash
	mustChange bool
	disabled   bool
}

// contents is everything the users file holds.
type contents struct {
	users  map[string]user
	policy Policy
}

// readUsers loads path; a missing file is an empty set of users.
func readUsers(path string) (contents, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return contents{users: map[string]user{}, policy: DefaultPolicy}, nil
	}
	if err != nil {
		return contents{}, fmt.Errorf("users: read %s: %w", path, err)
	}
	c, err := decodeUsers(data)
	if err != nil {
		return contents{}, fmt.Errorf("users: %s is corrupt (%v); restore it from a backup, or delete it to set up a new admin password as on first boot", path, err)
	}
	return c, nil
}

func decodeUsers(data []byte) (contents, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return contents{}, err
	}
	if f.Version != fileVersion {
		return contents{}, fmt.Errorf("format version %d, this agent reads version %d", f.Version, fileVersion)
	}
	c := contents{users: make(map[string]user, len(f.Users)), policy: DefaultPolicy}
	if f.Policy != nil {
		if err := f.Policy.Validate(); err != nil {
			return contents{}, fmt.Errorf("policy: %v", err)
		}
		c.policy = *f.Policy
	}
	for name, e := range f.Users {
		if !validName(name) {
			return contents{}, fmt.Errorf("user name %q is invalid", name)
		}
		h, err := parseHash(e.Hash)
		if err != nil {
			return contents{}, fmt.Errorf("user %s: %v", name, err)
		}
		c.users[name] = user{hashString: e.Hash, hash: h, mustChange: e.MustChange, disabled: e.Disabled}
	}
	return c, nil
}

// encodeUsers is deterministic (encoding/json sorts map keys), so
// SyncMirror can compare bytes. The default policy is left out, so a file
// that never changed it reads the same as before policies existed.
func encodeUsers(c contents) []byte {
	f := file{Version: fileVersion, Users: make(map[string]fileEntry, len(c.users))}
	if c.policy != DefaultPolicy {
		p := c.policy
		f.Policy = &p
	}
	for name, u := range c.users {
		f.Users[name] = fileEntry{Hash: u.hashString, MustChange: u.mustChange, Disabled: u.disabled}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("users: encode: %v", err)) // only strings and bools: cannot fail
	}
	return append(data, '\n')
}

// validName keeps names usable in HTTP Basic auth (no colon), on the
// console, and in URLs without escaping: letters, digits, '.', '_', '-'.
func validName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return false
		}
	}
	return true
}
