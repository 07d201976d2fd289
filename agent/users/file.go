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
}

type fileEntry struct {
	Hash       string `json:"hash"`
	MustChange bool   `json:"must_change,omitempty"`
}

// user is a loaded entry.
type user struct {
	hashString string
	hash       hash
	mustChange bool
}

// readUsers loads path; a missing file is an empty set of users.
func readUsers(path string) (map[string]user, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]user{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("users: read %s: %w", path, err)
	}
	users, err := decodeUsers(data)
	if err != nil {
		return nil, fmt.Errorf("users: %s is corrupt (%v); restore it from a backup, or delete it to set up a new admin password as on first boot", path, err)
	}
	return users, nil
}

func decodeUsers(data []byte) (map[string]user, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, err
	}
	if f.Version != fileVersion {
		return nil, fmt.Errorf("format version %d, this agent reads version %d", f.Version, fileVersion)
	}
	users := make(map[string]user, len(f.Users))
	for name, e := range f.Users {
		if !validName(name) {
			return nil, fmt.Errorf("user name %q is invalid", name)
		}
		h, err := parseHash(e.Hash)
		if err != nil {
			return nil, fmt.Errorf("user %s: %v", name, err)
		}
		users[name] = user{hashString: e.Hash, hash: h, mustChange: e.MustChange}
	}
	return users, nil
}

// encodeUsers is deterministic (encoding/json sorts map keys), so
// SyncMirror can compare bytes.
func encodeUsers(users map[string]user) []byte {
	f := file{Version: fileVersion, Users: make(map[string]fileEntry, len(users))}
	for name, u := range users {
		f.Users[name] = fileEntry{Hash: u.hashString, MustChange: u.mustChange}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("users: encode: %v", err)) // only strings and bools: cannot fail
	}
	return append(data, '\n')
}

// validName keeps names usable in HTTP Basic auth (no colon) and on the
// console.
func validName(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if r <= ' ' || r == ':' || r >= 0x7f {
			return false
		}
	}
	return true
}
