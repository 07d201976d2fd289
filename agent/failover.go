package main

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/floatip"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/supervisor"
)

// failoverDir keeps the relationship's state, the sync journal and the
// snapshots of a lost split brain.
const failoverDir = keelDir + "/failover"

// openFailover reads the failover relationship before the application
// starts (a backup holds it), finishing a sync a power cut interrupted.
func (a *agent) openFailover() error {
	if !a.dataMounted() || a.id == nil {
		return nil
	}
	s := &failover.Service{
		Dir:      failoverDir,
		Serial:   a.serial,
		Cert:     a.id.TLS,
		Key:      func() string { return a.peerKeyValue() },
		Versions: a.pairVersions,
		Sections: a.failoverSections(),
		Jobs:     a.jobs,
		Gateway:  defaultGateway,
		Log:      a.log.With("subsystem", "failover"),
	}
	if a.apps != nil {
		s.App = a.apps
	}
	if a.network != nil {
		s.Network = pairNetwork{a.network}
	}
	if a.floating != nil {
		f := floatip.Shared{M: a.floating}
		if a.network != nil {
			f.Persist = a.network.SetShared
		}
		s.Floating = f
	}
	if err := s.Open(); err != nil {
		a.say("the failover relationship could not be read: %v", err)
		return err
	}
	a.failover = s
	if st := s.State(); st.In() {
		a.say("failover: this appliance is the %s of %s (epoch %d)", st.Role, st.Peer.Serial, st.Epoch)
	}
	return nil
}

// startFailover runs the relationship once the network is up.
func (a *agent) startFailover() {
	s := a.failover
	if s == nil {
		return
	}
	supervisor.Go(a.log, "failover", func() {
		if a.network != nil {
			select {
			case <-a.network.Ready():
			case <-a.ctx.Done():
				return
			}
		}
		a.sup.Start(a.ctx, supervisor.Service{Name: "failover", Run: s.Run})
	})
}

func (a *agent) peerKeyValue() string {
	if a.peerKey == nil {
		return ""
	}
	return a.peerKey.Key()
}

func (a *agent) pairVersions() failover.Versions {
	v := failover.Versions{Base: a.version()}
	if a.apps != nil {
		if name, ver, ok := a.apps.Installed(); ok {
			v.App = name + " " + ver.String()
		}
	}
	return v
}

// failoverSections are what a backup takes from its primary: every
// setting of the appliance but its identity, its own network addresses,
// its install history and slots, and the inter-appliance key (the same on
// both, or there is no pair).
func (a *agent) failoverSections() []failover.Section {
	return []failover.Section{
		{Name: "users", Path: usersPath, Reload: func() error {
			if a.users == nil {
				return nil
			}
			return a.users.Reload()
		}},
		{Name: "certificates", Path: certsPath, Reload: func() error {
			if a.certs == nil {
				return nil
			}
			return a.certs.Reload()
		}},
		{Name: "access", Path: accessPath, Reload: func() error {
			if a.access == nil {
				return nil
			}
			return a.access.Load()
		}},
		{Name: "updates", Path: updatesDir + "/config.json", Reload: func() error {
			if a.updates == nil {
				return nil
			}
			return a.updates.Load()
		}},
		{Name: "backup-settings", Path: backupDir + "/settings.json"},
	}
}

// pairNetwork is the part of the network configuration a pair shares:
// DNS and NTP servers.
type pairNetwork struct{ nm *netcfg.Manager }

type sharedNetwork struct {
	DNS netcfg.DNS `json:"dns"`
	NTP []string   `json:"ntp_servers"`
}

func (p pairNetwork) Synced() (json.RawMessage, error) {
	c := p.nm.Config()
	return json.Marshal(sharedNetwork{DNS: c.DNS, NTP: c.NTPServers})
}

func (p pairNetwork) ApplySynced(b json.RawMessage) error {
	var n sharedNetwork
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	c := p.nm.Config()
	if slices.Equal(c.DNS.Servers, n.DNS.Servers) && slices.Equal(c.DNS.Search, n.DNS.Search) && slices.Equal(c.NTPServers, n.NTP) {
		return nil
	}
	c.DNS, c.NTPServers = n.DNS, n.NTP
	_, err := p.nm.Apply(c)
	return err
}

// sharedHeld reports whether this box holds a shared address now.
func sharedHeld(fm *floatip.Manager) func(failover.SharedAddress) bool {
	return func(a failover.SharedAddress) bool {
		p, err := a.Prefix()
		return err == nil && floatip.Shared{M: fm}.Holds(a.Interface, p)
	}
}

// defaultGateway is the IPv4 default route's gateway, else IPv6's.
func defaultGateway() (netip.Addr, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return netip.Addr{}, err
	}
	defer h.Close()
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			continue
		}
		for _, r := range routes {
			if (r.Dst == nil || isDefault(r.Dst)) && r.Gw != nil {
				if gw, ok := netip.AddrFromSlice(r.Gw); ok {
					return gw.Unmap(), nil
				}
			}
		}
	}
	return netip.Addr{}, errors.New("no default route")
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

// failoverRoutes registers the failover endpoints and the peer protocol.
func (a *agent) failoverRoutes() {
	s := a.failover
	if s == nil {
		return
	}
	var held func(failover.SharedAddress) bool
	if a.floating != nil {
		held = sharedHeld(a.floating)
	}
	s.Routes(a.api, a.api.HandlePublic, held, a.floatingDefaults)
}

// floatingDefaults are the floating addresses the network configuration
// has: by default, an establish makes them the pair's shared addresses.
func (a *agent) floatingDefaults() []failover.SharedAddress {
	if a.network == nil {
		return nil
	}
	shared, err := a.network.SharedAddresses()
	if err != nil {
		return nil
	}
	var out []failover.SharedAddress
	for _, s := range shared {
		out = append(out, failover.SharedAddress{Interface: s.Link, Address: s.Prefix.String()})
	}
	return out
}
