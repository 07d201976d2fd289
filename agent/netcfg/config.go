package netcfg

import (
	"encoding/json"
	"net"
	"strings"
)

// Config is the box's desired network configuration, as the operator edits
// it through GET/PUT /api/v1/network and as it is kept on the data
// partition.
type Config struct {
	Interfaces []Interface `json:"interfaces"`
	// Gateways are default routes; more than one is allowed (per family,
	// or with different metrics for a preferred and a backup uplink).
	Gateways []Gateway `json:"gateways,omitempty"`
	Routes   []Route   `json:"routes,omitempty"`
	DNS      DNS       `json:"dns"`
	Hostname string    `json:"hostname,omitempty"`
	// NTPServers are host names or addresses; when empty, the servers
	// DHCP hands out are used.
	NTPServers []string `json:"ntp_servers,omitempty"`
}

// Interface is one link, matched by MAC when MAC is set (names can change
// when hardware is added) and otherwise by name.
type Interface struct {
	Name string `json:"name,omitempty"`
	MAC  string `json:"mac,omitempty"`
	// Enabled is the administrative state; absent in JSON means true, so
	// that an operator who leaves it out does not take a link down.
	Enabled   bool      `json:"enabled"`
	MTU       int       `json:"mtu,omitempty"` // 0 leaves the kernel's value
	Addresses []Address `json:"addresses,omitempty"`
}

// Method says where an address comes from.
type Method string

const (
	MethodStatic Method = "static" // Address holds the CIDR
	MethodDHCP   Method = "dhcp"   // DHCPv4 client
	MethodSLAAC  Method = "slaac"  // IPv6 stateless autoconfiguration (router advertisements)
)

// Address is one entry in an interface's address list.
type Address struct {
	Method  Method `json:"method,omitempty"`  // "" means static
	Address string `json:"address,omitempty"` // CIDR, e.g. 192.0.2.10/24 or 2001:db8::10/64; static only
	// Enabled lets an operator keep an address in the configuration
	// without using it; absent in JSON means true.
	Enabled bool `json:"enabled"`
	// Shared marks a floating address that moves between appliances: the
	// floating-IP service adds and removes it, and the reconciler leaves it
	// alone either way.
	Shared bool `json:"shared,omitempty"`
}

// Gateway is a default route.
type Gateway struct {
	Via       string `json:"via"`
	Interface string `json:"interface,omitempty"` // name or MAC of a configured interface; optional
	Metric    int    `json:"metric,omitempty"`
}

// Route is a static route to a destination prefix, through a gateway or
// directly out of an interface.
type Route struct {
	Destination string `json:"destination"`
	Via         string `json:"via,omitempty"`
	Interface   string `json:"interface,omitempty"`
	Metric      int    `json:"metric,omitempty"`
}

// DNS is the resolver configuration; when Servers is empty, the servers
// DHCP hands out are used.
type DNS struct {
	Servers []string `json:"servers,omitempty"`
	Search  []string `json:"search,omitempty"`
}

// UnmarshalJSON defaults Enabled to true.
func (i *Interface) UnmarshalJSON(b []byte) error {
	type plain Interface
	p := plain{Enabled: true}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*i = Interface(p)
	return nil
}

// UnmarshalJSON defaults Enabled to true.
func (a *Address) UnmarshalJSON(b []byte) error {
	type plain Address
	p := plain{Enabled: true}
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*a = Address(p)
	return nil
}

// method is the address's method with the default filled in.
func (a Address) method() Method {
	if a.Method == "" {
		return MethodStatic
	}
	return a.Method
}

// Key is how gateways and routes refer to the interface: its name, or its
// MAC when it has no name.
func (i Interface) Key() string {
	if i.Name != "" {
		return i.Name
	}
	return i.MAC
}

// refersTo reports whether ref (from a gateway or route) names i.
func (i Interface) refersTo(ref string) bool {
	if ref == "" {
		return false
	}
	if i.Name != "" && ref == i.Name {
		return true
	}
	if i.MAC == "" {
		return false
	}
	a, err1 := net.ParseMAC(ref)
	b, err2 := net.ParseMAC(i.MAC)
	return err1 == nil && err2 == nil && strings.EqualFold(a.String(), b.String())
}

// UsesDHCP reports whether the interface runs a DHCPv4 client.
func (i Interface) UsesDHCP() bool { return i.Enabled && i.has(MethodDHCP) }

// UsesSLAAC reports whether the interface accepts router advertisements.
func (i Interface) UsesSLAAC() bool { return i.Enabled && i.has(MethodSLAAC) }

func (i Interface) has(m Method) bool {
	for _, a := range i.Addresses {
		if a.Enabled && a.method() == m {
			return true
		}
	}
	return false
}
