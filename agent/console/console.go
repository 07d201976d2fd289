// Package console owns the serial port and the screen once the box has
// booted: a login with an administrator's account (the API's users), a
// banner that says what the box is and how its last boot went, and a
// numbered recovery menu whose numbers never change between versions, so
// a printed runbook stays right.
//
// The terminal is in raw mode and the package edits lines itself: a dumb
// 80×24 terminal is enough, Ctrl-C is a key that returns to the menu
// (never a signal to PID 1, never a shell), and nothing typed reaches
// anything but the menu.
package console

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Banner is what the console shows before the login.
type Banner struct {
	Version, Serial, Slot string
	Addresses             []string
	Fingerprint           string
	// LastBoot is the last boot's result as a sentence (after a
	// rollback: which version failed, and why).
	LastBoot string
	// Recovery says why the box is in recovery mode; "" when it is not.
	Recovery string
	// Pair describes the failover relationship the box is in; "" for
	// none.
	Pair string
}

// Change is a network change made from the console: in force, and rolled
// back at Deadline unless confirmed.
type Change struct {
	Summary  string
	Confirm  func() error
	Deadline time.Time
}

// Link is a network interface the static-address entry offers.
type Link struct {
	Name, MAC string
	Addresses []string
}

// Box is what the console shows and does; the agent fills it in. An
// entry whose function is nil is shown as not available.
type Box struct {
	Banner func() Banner
	// Login checks an account; it answers a sentence when it refuses
	// ("" for a plain wrong name or password).
	Login  func(user, password string) (ok bool, why string)
	Status func() string
	// KernelLog and AgentLog are the boot log and the agent's log.
	KernelLog, AgentLog func() string
	// OtherSlot names the base slot not running and its version; err
	// says why it cannot be booted.
	OtherSlot        func() (name, version string, err error)
	BootOtherOnce    func() error
	MakeOtherDefault func() error
	Links            func() []Link
	NetworkDHCP      func() (Change, error)
	NetworkStatic    func(link, address, gateway string) (Change, error)
	// OperatorRecovery: this boot is GRUB's "recovery console" entry,
	// chosen by someone at the box; only then may the admin password be
	// reset from here.
	OperatorRecovery bool
	ResetAdmin       func() (password string, err error)
	ResetSecurity    func() error
	HWTest           func(ctx context.Context, w io.Writer) error
	// FactoryReset asks for a reset (mode quick or secure, then reboot
	// or poweroff); the box restarts to do it.
	FactoryReset func(mode, then string) error
	// DataSummary says what is on the data partition, before a format
	// in recovery mode; FormatData makes a new file system on it.
	DataSummary func() string
	FormatData  func() error
	Reboot      func() error
	PowerOff    func() error

	// Idle logs a session out after that long without a key (default
	// 10 minutes); LoginDelay follows a refused login (default 2 s).
	Idle, LoginDelay time.Duration
	Log              *slog.Logger
}

func (b *Box) log() *slog.Logger {
	if b.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return b.Log
}

// Serve runs sessions on the terminal dev (/dev/ttyS0, /dev/tty0) until
// ctx ends, reopening it if it goes away.
func (b *Box) Serve(ctx context.Context, dev string) {
	for ctx.Err() == nil {
		f, err := os.OpenFile(dev, os.O_RDWR|unix.O_NOCTTY, 0)
		if err == nil {
			if err = makeRaw(f); err == nil {
				err = b.Session(ctx, f, f)
			}
			f.Close()
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			b.log().Warn("console", "device", dev, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// Session runs the login and the menu on one terminal until it closes
// (io.EOF) or ctx ends.
func (b *Box) Session(ctx context.Context, r io.Reader, w io.Writer) error {
	idle := b.Idle
	if idle == 0 {
		idle = 10 * time.Minute
	}
	t := newTerm(r, w, 0)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.showBanner(t)
		t.idle = 0 // the login prompt waits for ever
		user, err := t.line("login: ", false)
		if errors.Is(err, io.EOF) {
			return err
		}
		if err != nil || strings.TrimSpace(user) == "" {
			continue
		}
		t.idle = idle
		pass, err := t.line("password: ", true)
		if errors.Is(err, io.EOF) {
			return err
		}
		if err != nil {
			continue
		}
		ok, why := false, ""
		if b.Login != nil {
			ok, why = b.Login(strings.TrimSpace(user), pass)
		}
		if !ok {
			if why == "" {
				why = "login incorrect"
			}
			t.printf("%s\n", why)
			b.log().Warn("console login refused", "user", user)
			delay := b.LoginDelay
			if delay == 0 {
				delay = 2 * time.Second
			}
			time.Sleep(delay)
			continue
		}
		b.log().Info("console login", "user", user)
		err = b.menu(ctx, t, strings.TrimSpace(user))
		b.log().Info("console logout", "user", user)
		if errors.Is(err, io.EOF) {
			return err
		}
		if errors.Is(err, ErrIdle) {
			t.printf("logged out after %s without a key\n", idle)
		}
	}
}

func (b *Box) showBanner(t *term) {
	var bn Banner
	if b.Banner != nil {
		bn = b.Banner()
	}
	t.printf("\n%s\n", strings.Repeat("=", 78))
	t.printf("keel %s  serial %s  slot %s\n", bn.Version, bn.Serial, bn.Slot)
	if len(bn.Addresses) > 0 {
		t.printf("addresses: %s\n", wrap(strings.Join(bn.Addresses, ", "), 67, "           "))
	} else {
		t.printf("addresses: none yet\n")
	}
	if bn.Fingerprint != "" {
		t.printf("certificate SHA-256:\n  %s\n", bn.Fingerprint)
	}
	if bn.LastBoot != "" {
		t.printf("last boot: %s\n", wrap(bn.LastBoot, 67, "           "))
	}
	if bn.Pair != "" {
		t.printf("failover:  %s\n", wrap(bn.Pair, 67, "           "))
	}
	if bn.Recovery != "" {
		t.printf("RECOVERY MODE: %s\n", wrap(bn.Recovery, 63, "               "))
	}
	t.printf("%s\n", strings.Repeat("=", 78))
}

// wrap breaks s at spaces into lines of at most width, indenting every
// line after the first.
func wrap(s string, width int, indent string) string {
	var out []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			out = append(out, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	out = append(out, line)
	return strings.Join(out, "\n"+indent)
}

// page shows text 20 lines at a time, long lines broken at spaces to 79
// columns.
func page(t *term, text string) error {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if len(l) <= 79 {
			lines = append(lines, l)
			continue
		}
		for _, w := range strings.Split(wrap(l, 79, "  "), "\n") {
			for len(w) > 79 { // a word longer than a line
				lines = append(lines, w[:79])
				w = w[79:]
			}
			lines = append(lines, w)
		}
	}
	const per = 20
	for i := 0; i < len(lines); i += per {
		for _, l := range lines[i:min(i+per, len(lines))] {
			t.printf("%s\n", l)
		}
		if i+per >= len(lines) {
			break
		}
		t.printf("-- %d/%d lines: Enter for more, q to stop --", i+per, len(lines))
		c, err := t.key()
		t.printf("\r%s\r", strings.Repeat(" ", 50))
		if err != nil {
			return err
		}
		if c == 'q' || c == 'Q' || c == 0x03 {
			return nil
		}
	}
	return nil
}

// yes asks for a typed word (yes, or the serial) and says whether it came.
func yes(t *term, prompt, word string) (bool, error) {
	ans, err := t.line(prompt, false)
	if err != nil {
		return false, err
	}
	if strings.TrimSpace(ans) != word {
		t.printf("not done.\n")
		return false, nil
	}
	return true, nil
}
