package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/floatip"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/supervisor"
	"keel.dev/keel/agent/timesync"
	"keel.dev/keel/agent/utilities"
)

const (
	networkPath = keelDir + "/network.json"
	// rtcStatePath keeps how far the hardware clock ticks from true time.
	rtcStatePath = keelDir + "/rtc.json"
	// defaultHostname is used until the operator sets one.
	defaultHostname = "keel"
)

// startNetwork runs the network manager, the time service and the floating
// address manager. A box without a network configuration (first boot, or a
// damaged data partition) runs DHCP on every link that has a carrier.
func (a *agent) startNetwork() error {
	path, rtcState := networkPath, rtcStatePath
	if !a.dataMounted() {
		path, rtcState = "", "" // nowhere durable: keep them in memory
	}
	a.clock = timesync.New(timesync.SystemClock{}, nil, a.log)
	a.clock.Hardware = timesync.NewRTC("/dev/rtc0", rtcState)
	fm, err := floatip.New(netcfg.NS{}, a.log)
	if err != nil {
		return fmt.Errorf("floating addresses: %w", err)
	}
	a.floating = fm
	nm, err := netcfg.NewManager(netcfg.ManagerOptions{
		Path: path, ResolvConf: "/etc/resolv.conf", Log: a.log,
		SetHostname: a.setHostname,
		OnNTP:       a.clock.SetServers,
		OnLease: func(l netcfg.Lease, ok bool) {
			var ntp []netip.Addr
			if ok {
				ntp = l.NTP
			}
			a.clock.SetDHCPServers(l.Link, ntp)
		},
		Keep: fm.Holds,
	})
	if err != nil {
		// A damaged network.json must not cut the box off: fall back to
		// DHCP in memory and say so; the file stays for the operator.
		a.say("the network configuration could not be read (%v); using DHCP on every link until it is fixed", err)
		if nm, err = netcfg.NewManager(netcfg.ManagerOptions{ResolvConf: "/etc/resolv.conf", Log: a.log, SetHostname: a.setHostname, OnNTP: a.clock.SetServers, Keep: fm.Holds}); err != nil {
			return err
		}
	}
	a.network = nm
	a.awaitRestoredNetwork(nm)
	if len(nm.Config().Interfaces) == 0 {
		links, err := netcfg.PhysicalLinks(3 * time.Second)
		if err != nil {
			return err
		}
		cfg := nm.Config()
		for _, l := range links {
			cfg.Interfaces = append(cfg.Interfaces, netcfg.Interface{Name: l, Enabled: true,
				Addresses: []netcfg.Address{{Method: netcfg.MethodDHCP, Enabled: true}}})
		}
		if cfg.Hostname == "" {
			cfg.Hostname = defaultHostname
		}
		if _, err := nm.Apply(cfg); err != nil {
			a.log.Warn("default network configuration not applied", "err", err)
		}
	}
	a.sup.Start(a.ctx, supervisor.Service{Name: "network", Run: nm.Run})
	a.sup.Start(a.ctx, supervisor.Service{Name: "time", Run: a.clock.Run})
	a.restoreFloating(nm, fm)
	return nil
}

// leaseWait bounds how long the boot waits for the DHCP leases of the
// links with a cable: a network without a DHCP server must not hold the
// commit, and the leases come whenever a server answers.
const leaseWait = 5 * time.Second

// awaitAddresses waits, at most leaseWait, until every link that runs DHCP
// and has a cable holds a lease. Without it the ready line came before the
// lease on one later boot in three (measured under QEMU), and a client that
// connected at once waited 6 s for its SYN to be sent again.
func (a *agent) awaitAddresses() error {
	if a.network == nil {
		return nil // the network phase said why
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(a.ctx, leaseWait)
	defer cancel()
	waiting, err := a.network.WaitLeases(ctx)
	switch {
	case err != nil:
		return err
	case len(waiting) > 0:
		a.say("no DHCP lease yet on %s after %s: the box goes on without it and takes one when a server answers", strings.Join(waiting, ", "), leaseWait)
	default:
		a.log.Info("addresses configured", "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// restoreFloating takes back the floating addresses held before the
// reboot: each is probed for and announced again once the network is up;
// one another box took meanwhile is reported, not taken. Probes take a
// fraction of a second each: not on the boot path.
func (a *agent) restoreFloating(nm *netcfg.Manager, fm *floatip.Manager) {
	shared, err := nm.SharedAddresses()
	if err != nil {
		a.log.Warn("floating addresses", "err", err)
	}
	// A failover pair's shared addresses follow its role, which the
	// failover service takes them by.
	if st, err := failover.LoadState(failoverDir); err == nil && st.In() {
		shared = slices.DeleteFunc(shared, func(s netcfg.SharedAddress) bool {
			for _, p := range st.Shared {
				if q, err := p.Prefix(); err == nil && q.Addr() == s.Prefix.Addr() {
					return true
				}
			}
			return false
		})
	}
	if len(shared) == 0 {
		return
	}
	supervisor.Go(a.log, "take back floating addresses", func() {
		select {
		case <-nm.Ready():
		case <-a.ctx.Done():
			return
		}
		if err := fm.Restore(shared); err != nil {
			a.say("floating addresses not taken back after the boot: %v", err)
		} else {
			a.log.Info("floating addresses taken back", "count", len(shared))
		}
	})
}

// setHostname sets the kernel's host name and the /etc/hosts line local
// programs (and Go's resolver) use to find it and localhost.
func (a *agent) setHostname(name string) error {
	if name == "" {
		name = defaultHostname
	}
	if err := netcfg.SystemHostname(name); err != nil {
		return err
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t%s\n", name)
	return atomicfile.Write("/etc/hosts", []byte(hosts), 0o644)
}

// networkRoutes registers the network, time, floating address and utility
// endpoints on the API.
func (a *agent) networkRoutes() {
	if a.network != nil {
		a.network.Routes(a.api)
	}
	if a.clock != nil {
		a.clock.Routes(a.api, func(servers []string) error {
			cfg := a.network.Config()
			cfg.NTPServers = slices.Clone(servers)
			_, err := a.network.Apply(cfg)
			return err
		})
	}
	if a.floating != nil {
		var persist func(string, netip.Prefix, bool) error
		if a.network != nil {
			persist = a.network.SetShared
		}
		a.floating.Routes(a.api, persist)
	}
	utilities.Routes(a.api, nil)
}
