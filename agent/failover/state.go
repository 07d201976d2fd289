package failover

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"keel.dev/keel/agent/atomicfile"
)

// Role is what a box is in its pair.
type Role string

// The roles. A box outside any relationship has RoleNone.
const (
	RoleNone    Role = ""
	RolePrimary Role = "primary"
	RoleBackup  Role = "backup"
)

func (r Role) String() string {
	if r == RoleNone {
		return "none"
	}
	return string(r)
}

// Defaults of the relationship's settings.
const (
	DefaultSyncInterval      = 5 * time.Minute
	DefaultHeartbeatInterval = 200 * time.Millisecond
	DefaultDetectionTime     = time.Second
	DefaultReannounce        = 10 * time.Second
	// FirstSyncDelay is how long after establishing the backup pulls its
	// first sync, as the vendor's guide has it ("about 60 seconds").
	FirstSyncDelay = 60 * time.Second
)

// Duration is a time.Duration written as "1s", "5m0s" in JSON.
type Duration time.Duration

// D is d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes "1s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"1s\" or \"5m\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"1s\" or \"5m\"", s)
	}
	*d = Duration(v)
	return nil
}

// Settings are the relationship's settings; the primary's hold, and the
// backup gets them from it.
type Settings struct {
	// SyncInterval is the time between scheduled syncs.
	SyncInterval Duration `json:"sync_interval"`
	// Automatic makes the backup take over when the primary stops
	// answering and the witness still does.
	Automatic bool `json:"automatic"`
	// HeartbeatInterval is the time between heartbeats; DetectionTime
	// how long the backup goes without one before it takes over.
	HeartbeatInterval Duration `json:"heartbeat_interval"`
	DetectionTime     Duration `json:"detection_time"`
	// Witness is the address that must still answer (ICMP echo) for the
	// backup to take over: "" is the default gateway.
	Witness string `json:"witness,omitempty"`
	// Reannounce is how often the primary announces the shared addresses
	// again (gratuitous ARP, unsolicited neighbour advertisement).
	Reannounce Duration `json:"reannounce"`
}

// DefaultSettings are the settings of a new relationship.
func DefaultSettings() Settings {
	return Settings{
		SyncInterval:      Duration(DefaultSyncInterval),
		HeartbeatInterval: Duration(DefaultHeartbeatInterval),
		DetectionTime:     Duration(DefaultDetectionTime),
		Reannounce:        Duration(DefaultReannounce),
	}
}

// Check refuses settings that cannot work, naming the field.
func (s Settings) Check() error {
	switch {
	case s.SyncInterval.D() < 10*time.Second || s.SyncInterval.D() > 7*24*time.Hour:
		return fieldError{"sync_interval", "must be between 10s and 168h"}
	case s.HeartbeatInterval.D() < 20*time.Millisecond || s.HeartbeatInterval.D() > 10*time.Second:
		return fieldError{"heartbeat_interval", "must be between 20ms and 10s"}
	case s.DetectionTime.D() < 2*s.HeartbeatInterval.D():
		return fieldError{"detection_time", "must be at least two heartbeat intervals, or one lost heartbeat would be a takeover"}
	case s.DetectionTime.D() > time.Minute:
		return fieldError{"detection_time", "must be at most 1m"}
	case s.Reannounce.D() < time.Second || s.Reannounce.D() > time.Hour:
		return fieldError{"reannounce", "must be between 1s and 1h"}
	}
	if s.Witness != "" {
		if _, err := netip.ParseAddr(s.Witness); err != nil {
			return fieldError{"witness", fmt.Sprintf("%q is not an IP address; leave it empty for the default gateway", s.Witness)}
		}
	}
	return nil
}

// Peer is the other box of the pair, as this one reaches it.
type Peer struct {
	Serial  string `json:"serial"`
	Address string `json:"address"` // host name or IP address
	Port    int    `json:"port"`    // its TLS port (the API's)
	// CertSHA256 pins the certificate (DER) the peer presented when the
	// relationship was made, in both directions.
	CertSHA256 string `json:"cert_sha256"`
}

// SharedAddress is an address that moves with the primary role.
type SharedAddress struct {
	Interface string `json:"interface"`
	Address   string `json:"address"` // CIDR
}

// Prefix parses Address.
func (a SharedAddress) Prefix() (netip.Prefix, error) { return netip.ParsePrefix(a.Address) }

// SyncReport is the last sync as status shows it.
type SyncReport struct {
	At        time.Time `json:"at"`
	From      string    `json:"from"` // the primary's serial
	Epoch     uint64    `json:"epoch"`
	Bytes     int64     `json:"bytes"` // on the wire, both directions
	DataBytes int64     `json:"data_bytes"`
	Files     int       `json:"files_changed"`
	DurationS float64   `json:"duration_s"`
	Result    string    `json:"result"` // a sentence
	OK        bool      `json:"ok"`
}

// State is the relationship as the data partition keeps it: what the box
// resumes from at boot (one switch on Role).
type State struct {
	Version int             `json:"version"`
	Role    Role            `json:"role"`
	Epoch   uint64          `json:"epoch"`
	Peer    *Peer           `json:"peer,omitempty"`
	Since   time.Time       `json:"since,omitzero"`
	Reverse *Peer           `json:"reverse,omitempty"` // on the primary: how the backup reaches it
	Shared  []SharedAddress `json:"shared,omitempty"`
	// Settings are the relationship's.
	Settings Settings `json:"settings"`
	// Diverged is set when this box lost a split brain: its next sync
	// keeps what it had that differs from the winner as a snapshot.
	Diverged  string      `json:"diverged,omitempty"` // the snapshot's name
	LastSync  *SyncReport `json:"last_sync,omitempty"`
	LastOK    *SyncReport `json:"last_ok,omitempty"`
	RoleSince time.Time   `json:"role_since,omitzero"`
	// LastChange says why the role last changed, as a sentence.
	LastChange string `json:"last_change,omitempty"`
}

const stateVersion = 1

// In reports whether the box is in a relationship.
func (s State) In() bool { return s.Role != RoleNone && s.Peer != nil }

// LoadState reads the state file in dir; none is a box outside any
// relationship.
func LoadState(dir string) (State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return State{Version: stateVersion, Settings: DefaultSettings()}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("failover state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("failover state %s is damaged (%v): break the relationship on the other appliance and establish it again", filepath.Join(dir, stateFile), err)
	}
	if s.Version != stateVersion {
		return State{}, fmt.Errorf("failover state %s is of version %d, which this software does not know", filepath.Join(dir, stateFile), s.Version)
	}
	if s.Settings.SyncInterval == 0 {
		s.Settings = DefaultSettings()
	}
	return s, nil
}

// WriteState writes a state file, as a box in that state would have it
// (benchmarks and tests start pairs from one).
func WriteState(dir string, s State) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return saveState(dir, s)
}

func saveState(dir string, s State) error {
	s.Version = stateVersion
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, stateFile), append(b, '\n'), 0o600)
}

const stateFile = "state.json"

// fieldError names a request's field and its problem.
type fieldError struct{ field, problem string }

func (e fieldError) Error() string { return e.field + ": " + e.problem }
