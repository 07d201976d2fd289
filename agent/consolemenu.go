package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"keel.dev/keel/agent/certs"
	"keel.dev/keel/agent/console"
	"keel.dev/keel/agent/datafs"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/agent/reset"
	"keel.dev/keel/image/layout"
)

// consoleDevices are the terminals the recovery menu runs on.
var consoleDevices = []string{"/dev/ttyS0", "/dev/tty0"}

// startConsole runs the recovery menu on the serial port and the screen,
// once the boot is done (before, the boot's messages have the terminal).
func (a *agent) startConsole() {
	b := a.consoleBox()
	for _, dev := range consoleDevices {
		go b.Serve(a.ctx, dev)
	}
}

func (a *agent) consoleBox() *console.Box {
	b := &console.Box{
		Banner:           a.consoleBanner,
		Login:            a.consoleLogin,
		Status:           a.consoleStatus,
		KernelLog:        console.KernelLog,
		OtherSlot:        a.otherSlot,
		BootOtherOnce:    func() error { return a.slotChange("boot once") },
		MakeOtherDefault: func() error { return a.slotChange("default") },
		OperatorRecovery: a.boot0.Operator,
		FactoryReset:     a.consoleReset,
		Reboot:           func() error { return a.requestShutdown(pid1.Reboot) },
		PowerOff:         func() error { return a.requestShutdown(pid1.PowerOff) },
		HWTest:           a.selftest.console,
		Log:              a.log,
	}
	if a.logRing != nil {
		b.AgentLog = a.logRing.String
	}
	if a.network != nil {
		b.Links = consoleLinks
		b.NetworkDHCP = a.consoleDHCP
		b.NetworkStatic = a.consoleStatic
	}
	if a.users != nil {
		b.ResetAdmin = a.consoleResetAdmin
	}
	if a.access != nil || a.certs != nil {
		b.ResetSecurity = a.consoleResetSecurity
	}
	if a.inRecovery() && !a.dataMounted() {
		b.DataSummary = a.dataSummary
		b.FormatData = a.formatData
	}
	return b
}

func (a *agent) consoleBanner() console.Banner {
	b := console.Banner{Version: a.version(), Serial: a.serial, Slot: string(a.boot0.Slot)}
	b.Addresses = hostAddresses()
	if a.id != nil {
		b.Fingerprint = a.id.Fingerprint()
	}
	a.mu.Lock()
	b.LastBoot, b.Recovery = a.result, a.recovery
	a.mu.Unlock()
	if a.failover != nil {
		if st := a.failover.State(); st.In() {
			b.Pair = fmt.Sprintf("%s of %s (epoch %d)", st.Role, st.Peer.Serial, st.Epoch)
		}
	}
	return b
}

// hostAddresses are the box's addresses, "eth0 10.0.2.15/24".
func hostAddresses() []string {
	var out []string
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := i.Addrs()
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
				out = append(out, i.Name+" "+ipn.String())
			}
		}
	}
	return out
}

func (a *agent) consoleLogin(user, password string) (bool, string) {
	if a.users == nil {
		return false, "no accounts could be loaded: the console cannot log anyone in (see the boot messages)"
	}
	if !a.users.Verify(user, password) {
		return false, ""
	}
	return true, ""
}

func (a *agent) consoleStatus() string {
	s := a.status()
	var b strings.Builder
	fmt.Fprintf(&b, "version %s in slot %s, serial %s, kernel %s, up %.0f s\n", s.Base.Version, s.Base.Slot, s.Serial, s.Kernel, s.UptimeS)
	fmt.Fprintf(&b, "last boot: %s\n", s.Boot.LastResult)
	if s.Boot.Recovery {
		fmt.Fprintf(&b, "RECOVERY MODE: %s\n", s.Boot.RecoveryReason)
	}
	commit := "committed"
	if !s.Boot.Committed {
		commit = "not committed"
	}
	fmt.Fprintf(&b, "this boot: %s; boot state from the %s copy\n", commit, s.Boot.BootStateCopy)
	for _, sl := range s.Base.Slots {
		v := sl.Version
		if v == "" {
			v = "empty"
		}
		var notes []string
		if sl.Running {
			notes = append(notes, "running")
		}
		if sl.Default {
			notes = append(notes, "default")
		}
		switch {
		case sl.Committed:
			notes = append(notes, "committed")
		case sl.Bootable:
			notes = append(notes, fmt.Sprintf("on trial, %d tries left", sl.TriesLeft))
		case sl.Version != "":
			notes = append(notes, "marked bad")
		}
		fmt.Fprintf(&b, "slot %s: %s (%s)\n", sl.Slot, v, strings.Join(notes, ", "))
	}
	fmt.Fprintf(&b, "data partition: %s\n", s.Data.State)
	for _, ad := range hostAddresses() {
		fmt.Fprintf(&b, "address: %s\n", ad)
	}
	if a.clock != nil {
		st := a.clock.Status()
		fmt.Fprintf(&b, "time: %s UTC, %s\n", time.Now().UTC().Format(time.DateTime), map[bool]string{true: "synchronized", false: "not synchronized"}[st.Synchronized])
	}
	return b.String()
}

// otherSlot is the base slot not running, if it can be booted.
func (a *agent) otherSlot() (string, string, error) {
	if a.esp == nil || a.boot0.Slot == "" {
		return "", "", errors.New("the boot state is not known")
	}
	other := a.boot0.Slot.Other()
	st, _, err := a.esp.Read()
	if err != nil {
		return "", "", fmt.Errorf("the boot state cannot be read: %v", err)
	}
	sl := st.Slot(other)
	if sl.Version == "" {
		return string(other), "", fmt.Errorf("slot %s holds no base", other)
	}
	return string(other), sl.Version, nil
}

func (a *agent) slotChange(what string) error {
	other := a.boot0.Slot.Other()
	var err error
	if what == "boot once" {
		_, err = a.esp.BootOnce(other)
	} else {
		_, err = a.esp.MakeDefault(other)
	}
	if err == nil {
		a.log.Info("base slot changed from the console", "slot", other, "change", what)
	}
	return err
}

func (a *agent) consoleReset(mode, then string) error {
	err := reset.Store{Dir: espKeelDir}.Ask(reset.Request{Mode: reset.Mode(mode), Then: reset.Then(then), Requested: time.Now(), By: "console"})
	if err != nil {
		return err
	}
	return a.requestShutdown(pid1.Reboot)
}

// consoleLinks are the interfaces the static-address entry offers.
func consoleLinks() []console.Link {
	var out []console.Link
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			continue
		}
		l := console.Link{Name: i.Name, MAC: i.HardwareAddr.String()}
		addrs, _ := i.Addrs()
		for _, ad := range addrs {
			l.Addresses = append(l.Addresses, ad.String())
		}
		out = append(out, l)
	}
	return out
}

// consoleChange applies a network change from the console, to be
// confirmed there.
func (a *agent) consoleChange(c netcfg.Config, summary string) (console.Change, error) {
	_, p, err := a.network.ApplyGuarded(c, nil)
	if err != nil {
		return console.Change{}, err
	}
	return console.Change{Summary: summary, Deadline: p.RollbackAt, Confirm: func() error { return a.network.Confirm(p.Token) }}, nil
}

func (a *agent) consoleDHCP() (console.Change, error) {
	cur := a.network.Config()
	c := netcfg.Config{Hostname: cur.Hostname, NTPServers: cur.NTPServers}
	return a.consoleChange(c, "every interface now asks DHCP for its address")
}

func (a *agent) consoleStatic(link, address, gateway string) (console.Change, error) {
	p, err := netip.ParsePrefix(address)
	if err != nil {
		return console.Change{}, fmt.Errorf("%q is not an address with its prefix length, such as 192.0.2.10/24", address)
	}
	ifc, err := net.InterfaceByName(link)
	if err != nil {
		return console.Change{}, fmt.Errorf("there is no interface %q; choose one of those listed", link)
	}
	c := a.network.Config()
	i := -1
	for k, x := range c.Interfaces {
		if x.Name == link || (x.MAC != "" && strings.EqualFold(x.MAC, ifc.HardwareAddr.String())) {
			i = k
		}
	}
	if i < 0 {
		c.Interfaces = append(c.Interfaces, netcfg.Interface{Name: link, Enabled: true})
		i = len(c.Interfaces) - 1
	}
	// Floating addresses stay: the failover service owns them.
	var keep []netcfg.Address
	for _, ad := range c.Interfaces[i].Addresses {
		if ad.Shared {
			keep = append(keep, ad)
		}
	}
	c.Interfaces[i].Enabled = true
	c.Interfaces[i].Addresses = append([]netcfg.Address{{Method: netcfg.MethodStatic, Address: p.String(), Enabled: true}}, keep...)
	summary := fmt.Sprintf("%s now has the static address %s", link, p)
	if gateway != "" {
		gw, err := netip.ParseAddr(gateway)
		if err != nil {
			return console.Change{}, fmt.Errorf("%q is not an address", gateway)
		}
		var gws []netcfg.Gateway
		for _, g := range c.Gateways {
			if ga, err := netip.ParseAddr(g.Via); err == nil && ga.Is4() != gw.Is4() {
				gws = append(gws, g)
			}
		}
		c.Gateways = append(gws, netcfg.Gateway{Via: gw.String()})
		summary += " and the default gateway " + gw.String()
	}
	return a.consoleChange(c, summary)
}

func (a *agent) consoleResetAdmin() (string, error) {
	pw := randomPassword()
	if err := a.users.ResetPassword("admin", pw, true); err != nil {
		return "", err
	}
	a.log.Warn("the admin password was reset from the recovery console")
	return pw, nil
}

// randomPassword is 16 characters a person can type from a screen.
func randomPassword() string {
	const alphabet = "abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789"
	b := make([]byte, 16)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (a *agent) consoleResetSecurity() error {
	var errs []error
	if a.access != nil {
		errs = append(errs, a.access.Reset())
	}
	if a.certs != nil {
		errs = append(errs, a.certs.SetTLS(certs.TLSSettings{}))
		errs = append(errs, a.certs.Assign(certs.Assignments{}))
	}
	a.log.Warn("allowed networks and TLS settings were reset from the console")
	return errors.Join(errs...)
}

func (a *agent) dataSummary() string {
	part, err := a.blocks.Wait(layout.Data, time.Second)
	if err != nil {
		return "no data partition was found: " + err.Error()
	}
	a.mu.Lock()
	why := a.recovery
	state := a.dataState
	a.mu.Unlock()
	return fmt.Sprintf("%s, %d MiB, state %s: %s", part.Device, part.Size>>20, state, why)
}

func (a *agent) formatData() error {
	part, err := a.blocks.Wait(layout.Data, time.Second)
	if err != nil {
		return err
	}
	if err := datafs.Linux().Format(part.Device, part.Size); err != nil {
		return fmt.Errorf("format %s: %w", part.Device, err)
	}
	a.log.Warn("the data partition was formatted from the recovery console", "device", part.Device)
	return nil
}
