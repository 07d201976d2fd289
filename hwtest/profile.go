package hwtest

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// Profile is what a hardware model has; the checks compare against it.
// A zero field is not checked.
type Profile struct {
	Name string `json:"name"`
	// Description says which hardware this is.
	Description string `json:"description"`
	CPUs        int    `json:"cpus"`       // at least this many
	MemoryMiB   int    `json:"memory_mib"` // at least 90% of this (firmware and the kernel keep some)
	Disks       []Disk `json:"disks"`
	NICs        []NIC  `json:"nics"`
	RTC         bool   `json:"rtc"`      // an RTC must be present
	Watchdog    bool   `json:"watchdog"` // a hardware watchdog must be present
	// MaxTempC is the highest temperature allowed where a sensor has no
	// critical limit of its own (default 90).
	MaxTempC int `json:"max_temp_c"`
}

// Disk is a disk the model has.
type Disk struct {
	Bus    string `json:"bus"` // virtio, ata, nvme, scsi, usb
	MinGiB int    `json:"min_gib"`
}

// NIC is a network interface the model has.
type NIC struct {
	Driver string `json:"driver"` // virtio_net, e1000, e1000e, igb…
	Link   bool   `json:"link"`   // a cable must be plugged in
}

//go:embed profiles/*.json
var profileFiles embed.FS

// Profiles are the shipped profiles by name (template.json is a model
// for a physical appliance's, not a profile).
func Profiles() (map[string]Profile, error) {
	out := map[string]Profile{}
	es, err := fs.ReadDir(profileFiles, "profiles")
	if err != nil {
		return nil, err
	}
	for _, e := range es {
		if e.Name() == "template.json" {
			continue
		}
		b, err := profileFiles.ReadFile("profiles/" + e.Name())
		if err != nil {
			return nil, err
		}
		p, err := ParseProfile(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out[p.Name] = p
	}
	return out, nil
}

// ProfileNames lists the shipped profiles.
func ProfileNames() []string {
	ps, _ := Profiles()
	var out []string
	for n := range ps {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// LookupProfile is a shipped profile by name.
func LookupProfile(name string) (Profile, error) {
	ps, err := Profiles()
	if err != nil {
		return Profile{}, err
	}
	p, ok := ps[name]
	if !ok {
		return Profile{}, fmt.Errorf("there is no hardware profile %q; choose one of %s", name, strings.Join(ProfileNames(), ", "))
	}
	return p, nil
}

// ParseProfile reads a profile, refusing unknown fields (a typo would
// otherwise check nothing).
func ParseProfile(b []byte) (Profile, error) {
	var p Profile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("hardware profile: %w", err)
	}
	if p.Name == "" {
		return p, fmt.Errorf("hardware profile: no name")
	}
	for _, d := range p.Disks {
		switch d.Bus {
		case "virtio", "ata", "nvme", "scsi", "usb":
		default:
			return p, fmt.Errorf("hardware profile %s: disk bus %q is not virtio, ata, nvme, scsi or usb", p.Name, d.Bus)
		}
	}
	return p, nil
}

// Match is the first shipped profile (by name) whose disks and network
// interfaces are all present on this hardware; a generic profile that
// expects nothing when none is.
func Match(o Options) Profile {
	disks, nics := findDisks(o), findNICs(o)
	for _, name := range ProfileNames() {
		p, _ := LookupProfile(name)
		ok := true
		for _, d := range p.Disks {
			found := false
			for _, h := range disks {
				found = found || h.bus == d.Bus
			}
			ok = ok && found
		}
		for _, n := range p.NICs {
			found := false
			for _, h := range nics {
				found = found || h.driver == n.Driver
			}
			ok = ok && found
		}
		if ok {
			return p
		}
	}
	return Profile{Name: "generic", Description: "no shipped profile matches this hardware: nothing is compared against a model"}
}
