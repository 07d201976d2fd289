package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// entry is one line of the menu. Its number is part of the interface:
// runbooks name it, so numbers are never reused or moved.
type entry struct {
	n     int
	title string
	// unavailable says why the entry cannot run now; "" when it can.
	unavailable func() string
	run         func(ctx context.Context, t *term) error
}

// The menu's numbers.
const (
	MenuStatus        = 1
	MenuBootLog       = 2
	MenuAgentLog      = 3
	MenuBootOtherOnce = 4
	MenuOtherDefault  = 5
	MenuNetworkDHCP   = 6
	MenuNetworkStatic = 7
	MenuResetAdmin    = 8
	MenuResetSecurity = 9
	MenuHWTest        = 10
	MenuFactoryReset  = 11
	MenuReboot        = 12
	MenuPowerOff      = 13
	MenuFormatData    = 14
	MenuLogout        = 0
)

func (b *Box) entries() []entry {
	missing := func(ok bool) func() string {
		return func() string {
			if !ok {
				return "not on this appliance"
			}
			return ""
		}
	}
	other := func() string {
		if b.OtherSlot == nil {
			return "not on this appliance"
		}
		if _, _, err := b.OtherSlot(); err != nil {
			return err.Error()
		}
		return ""
	}
	return []entry{
		{MenuStatus, "Status and last boot result", missing(b.Status != nil), func(_ context.Context, t *term) error { return page(t, b.Status()) }},
		{MenuBootLog, "Boot log (kernel messages)", missing(b.KernelLog != nil), func(_ context.Context, t *term) error { return page(t, b.KernelLog()) }},
		{MenuAgentLog, "Agent log", missing(b.AgentLog != nil), func(_ context.Context, t *term) error { return page(t, b.AgentLog()) }},
		{MenuBootOtherOnce, "Boot the other slot once (a trial)", other, b.bootOtherOnce},
		{MenuOtherDefault, "Make the other slot the default", other, b.otherDefault},
		{MenuNetworkDHCP, "Network: reset to DHCP", missing(b.NetworkDHCP != nil), b.networkDHCP},
		{MenuNetworkStatic, "Network: static address on an interface", missing(b.NetworkStatic != nil), b.networkStatic},
		{MenuResetAdmin, "Reset the admin password", func() string {
			if b.ResetAdmin == nil {
				return "not on this appliance"
			}
			if !b.OperatorRecovery {
				return `only in a boot of GRUB's "recovery console" entry, which proves someone is at the appliance`
			}
			return ""
		}, b.resetAdmin},
		{MenuResetSecurity, "Reset allowed networks and TLS settings to defaults", missing(b.ResetSecurity != nil), b.resetSecurity},
		{MenuHWTest, "Hardware self-test", missing(b.HWTest != nil), func(ctx context.Context, t *term) error { return b.hwtest(ctx, t) }},
		{MenuFactoryReset, "Factory reset", missing(b.FactoryReset != nil), b.factoryReset},
		{MenuReboot, "Reboot", missing(b.Reboot != nil), func(_ context.Context, t *term) error { return b.power(t, "reboot", b.Reboot) }},
		{MenuPowerOff, "Power off", missing(b.PowerOff != nil), func(_ context.Context, t *term) error { return b.power(t, "power off", b.PowerOff) }},
		{MenuFormatData, "Format the data partition", func() string {
			if b.FormatData == nil {
				return "not on this appliance"
			}
			if b.Banner == nil || b.Banner().Recovery == "" {
				return "only in recovery mode"
			}
			return ""
		}, b.formatData},
	}
}

// menu runs the menu for a logged-in user until logout.
func (b *Box) menu(ctx context.Context, t *term, user string) error {
	for {
		es := b.entries()
		t.printf("\n")
		for _, e := range es {
			line := fmt.Sprintf("%2d  %s", e.n, e.title)
			if why := e.unavailable(); why != "" {
				line += " (not available)"
			}
			t.printf("%s\n", line)
		}
		t.printf("%2d  Log out\n", MenuLogout)
		ans, err := t.line(user+"> choose a number: ", false)
		if errors.Is(err, ErrInterrupt) {
			continue
		}
		if err != nil {
			return err
		}
		ans = strings.TrimSpace(ans)
		if ans == "" {
			continue
		}
		n, err := strconv.Atoi(ans)
		if err != nil {
			t.printf("%q is not a number of the menu.\n", ans)
			continue
		}
		if n == MenuLogout {
			t.printf("logged out.\n")
			return nil
		}
		var chosen *entry
		for i := range es {
			if es[i].n == n {
				chosen = &es[i]
			}
		}
		if chosen == nil {
			t.printf("%d is not a number of the menu.\n", n)
			continue
		}
		if why := chosen.unavailable(); why != "" {
			t.printf("%s is not available: %s.\n", chosen.title, why)
			continue
		}
		b.log().Info("console menu", "user", user, "entry", n, "title", chosen.title)
		t.printf("\n== %d %s ==\n", chosen.n, chosen.title)
		err = chosen.run(ctx, t)
		switch {
		case errors.Is(err, ErrInterrupt):
			t.printf("stopped; back to the menu.\n")
		case errors.Is(err, io.EOF), errors.Is(err, ErrIdle):
			return err
		case err != nil:
			t.printf("failed: %s\n", sentence(err))
		}
	}
}

func sentence(err error) string {
	s := err.Error()
	if s == "" {
		return "an unknown error"
	}
	return s
}

func (b *Box) bootOtherOnce(_ context.Context, t *term) error {
	name, version, _ := b.OtherSlot()
	t.printf("The next boot tries slot %s (%s) once; if it does not come up healthy the box comes back to this slot.\n", name, version)
	if ok, err := yes(t, "Type yes to do it: ", "yes"); !ok || err != nil {
		return err
	}
	if err := b.BootOtherOnce(); err != nil {
		return err
	}
	t.printf("slot %s boots once at the next boot.\n", name)
	if b.Reboot == nil {
		return nil
	}
	if ok, err := yes(t, "Type yes to reboot now: ", "yes"); !ok || err != nil {
		return err
	}
	return b.Reboot()
}

func (b *Box) otherDefault(_ context.Context, t *term) error {
	name, version, _ := b.OtherSlot()
	t.printf("Slot %s (%s) becomes the default from the next boot on.\n", name, version)
	if ok, err := yes(t, "Type yes to do it: ", "yes"); !ok || err != nil {
		return err
	}
	if err := b.MakeOtherDefault(); err != nil {
		return err
	}
	t.printf("slot %s is the default now; reboot to use it.\n", name)
	return nil
}

// confirmChange shows a change in force and keeps it only if the
// operator confirms before its deadline.
func confirmChange(t *term, c Change) error {
	t.printf("%s\n", c.Summary)
	left := time.Until(c.Deadline).Round(time.Second)
	t.printf("It is in force now. Type yes within %s to keep it; otherwise the configuration from before comes back.\n", left)
	ans, err := t.line("keep it? ", false)
	if err != nil && !errors.Is(err, ErrInterrupt) {
		return err
	}
	if strings.TrimSpace(ans) != "yes" {
		t.printf("not confirmed: the configuration from before comes back at %s.\n", c.Deadline.Format("15:04:05"))
		return nil
	}
	if err := c.Confirm(); err != nil {
		return fmt.Errorf("%w (the change was rolled back: it took longer than the confirmation allows)", err)
	}
	t.printf("confirmed and saved.\n")
	return nil
}

func (b *Box) networkDHCP(_ context.Context, t *term) error {
	t.printf("Every interface goes back to DHCP; static addresses, gateways and routes are removed (the host name and NTP servers stay).\n")
	if ok, err := yes(t, "Type yes to do it: ", "yes"); !ok || err != nil {
		return err
	}
	c, err := b.NetworkDHCP()
	if err != nil {
		return err
	}
	return confirmChange(t, c)
}

func (b *Box) networkStatic(_ context.Context, t *term) error {
	if b.Links != nil {
		for _, l := range b.Links() {
			t.printf("  %-10s %s  %s\n", l.Name, l.MAC, strings.Join(l.Addresses, ", "))
		}
	}
	link, err := t.line("interface: ", false)
	if err != nil {
		return err
	}
	addr, err := t.line("address with prefix (for example 192.0.2.10/24): ", false)
	if err != nil {
		return err
	}
	gw, err := t.line("default gateway (empty for none): ", false)
	if err != nil {
		return err
	}
	c, err := b.NetworkStatic(strings.TrimSpace(link), strings.TrimSpace(addr), strings.TrimSpace(gw))
	if err != nil {
		return err
	}
	return confirmChange(t, c)
}

func (b *Box) resetAdmin(_ context.Context, t *term) error {
	t.printf("The admin account gets a new random password, is enabled again, and must change it at its next login.\n")
	if ok, err := yes(t, "Type yes to do it: ", "yes"); !ok || err != nil {
		return err
	}
	pw, err := b.ResetAdmin()
	if err != nil {
		return err
	}
	t.printf("The admin password is now: %s\n", pw)
	return nil
}

func (b *Box) resetSecurity(_ context.Context, t *term) error {
	t.printf("Allowed networks go back to everyone, the TLS settings to their defaults, and every address is served the appliance's own certificate.\n")
	if ok, err := yes(t, "Type yes to do it: ", "yes"); !ok || err != nil {
		return err
	}
	if err := b.ResetSecurity(); err != nil {
		return err
	}
	t.printf("done: the web interface and the API answer everyone with the appliance's own certificate.\n")
	return nil
}

// hwtest runs the self-test; Ctrl-C stops it.
func (b *Box) hwtest(ctx context.Context, t *term) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	t.printf("running; Ctrl-C stops it.\n")
	go func() { done <- b.HWTest(ctx, t.w) }()
	for {
		select {
		case err := <-done:
			return err
		case c, ok := <-t.keys:
			if !ok {
				cancel()
				<-done
				return io.EOF
			}
			if c == 0x03 {
				cancel()
				<-done
				return ErrInterrupt
			}
		}
	}
}

func (b *Box) factoryReset(_ context.Context, t *term) error {
	serial := ""
	if b.Banner != nil {
		serial = b.Banner().Serial
	}
	t.printf("A factory reset removes the configuration, users, keys, certificates and application data. The installed slots stay.\n")
	t.printf("  quick   a new data file system\n  secure  every block of the data partition cleared (NIST SP 800-88 Clear), then verified\n")
	mode, err := t.line("mode (quick or secure): ", false)
	if err != nil {
		return err
	}
	mode = strings.TrimSpace(mode)
	if mode != "quick" && mode != "secure" {
		t.printf("not done: the mode is quick or secure.\n")
		return nil
	}
	then, err := t.line("then (reboot or poweroff): ", false)
	if err != nil {
		return err
	}
	then = strings.TrimSpace(then)
	if then != "reboot" && then != "poweroff" {
		t.printf("not done: reboot or poweroff.\n")
		return nil
	}
	if ok, err := yes(t, "Type the appliance's serial ("+serial+") to reset it: ", serial); !ok || err != nil {
		return err
	}
	if err := b.FactoryReset(mode, then); err != nil {
		return err
	}
	t.printf("the factory reset begins: the appliance restarts; leave the power on.\n")
	return nil
}

func (b *Box) power(t *term, what string, do func() error) error {
	if ok, err := yes(t, "Type yes to "+what+": ", "yes"); !ok || err != nil {
		return err
	}
	return do()
}

func (b *Box) formatData(_ context.Context, t *term) error {
	if b.DataSummary != nil {
		t.printf("On the data partition now:\n%s\n", b.DataSummary())
	}
	t.printf("Formatting makes a new, empty data file system: everything listed above is gone. Restore a backup afterwards.\n")
	if ok, err := yes(t, "Type FORMAT to format it: ", "FORMAT"); !ok || err != nil {
		return err
	}
	if err := b.FormatData(); err != nil {
		return err
	}
	t.printf("the data partition was formatted; reboot to use it.\n")
	return nil
}
