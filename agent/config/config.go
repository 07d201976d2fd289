// Package config owns the appliance's configuration file on the data
// partition: loaded at boot, written atomically on change.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"keel.dev/keel/agent/atomicfile"
)

// Config is the agent's own settings. Subsystems keep theirs in files
// they own (the network configuration, with the host name, in netcfg).
type Config struct {
	// Serial is kept here when the hardware reports none, so it stays the
	// same across reboots.
	Serial string `json:"serial,omitempty"`
}

// Default is the configuration of a new box.
func Default() Config { return Config{} }

// Load reads path; a missing file gives the defaults and created=true.
func Load(path string) (cfg Config, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Default(), true, nil
	}
	if err != nil {
		return Config{}, false, fmt.Errorf("load configuration: %w", err)
	}
	cfg = Default()
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Config{}, false, fmt.Errorf("configuration %s is damaged (%v): restore a backup", path, err)
	}
	return cfg, false, nil
}

// Save writes cfg to path atomically.
func Save(path string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}
