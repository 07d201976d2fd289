package main

import (
	"net"
	"strings"
	"testing"

	"keel.dev/keel/agent/netcfg"
)

func TestRestoredInterfacesArePlacedByNameThenMAC(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	links := []net.Interface{{Name: "eth0", HardwareAddr: mac("52:54:00:00:00:99")}, {Name: "enp2s0", HardwareAddr: mac("52:54:00:00:00:02")}}
	c := netcfg.Config{Interfaces: []netcfg.Interface{
		{Name: "eth0", MAC: "52:54:00:00:00:01"}, // same name, other MAC: by name
		{Name: "eth1", MAC: "52:54:00:00:00:02"}, // renamed: by MAC
		{Name: "eth2", MAC: "52:54:00:00:00:03"}, // not here
	}}
	notes := placeInterfaces(&c, links)
	if c.Interfaces[0].Name != "eth0" || c.Interfaces[0].MAC != "" {
		t.Errorf("by name: %+v", c.Interfaces[0])
	}
	if c.Interfaces[1].Name != "enp2s0" {
		t.Errorf("by MAC: %+v", c.Interfaces[1])
	}
	if c.Interfaces[2].Name != "eth2" || c.Interfaces[2].MAC != "52:54:00:00:00:03" {
		t.Errorf("the unplaced one changed: %+v", c.Interfaces[2])
	}
	if len(notes) != 3 || !strings.Contains(notes[2], "eth2") || !strings.Contains(notes[2], "unused") {
		t.Errorf("notes %q", notes)
	}
}
