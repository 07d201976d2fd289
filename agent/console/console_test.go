package console

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// screen is what a terminal shows, safe to read while the session writes.
type screen struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// operator types on a session and waits for what it shows.
type operator struct {
	t   *testing.T
	in  *io.PipeWriter
	out *screen
	pos int
}

func start(t *testing.T, b *Box) (*operator, chan error) {
	t.Helper()
	r, w := io.Pipe()
	op := &operator{t: t, in: w, out: &screen{}}
	done := make(chan error, 1)
	b.LoginDelay = time.Millisecond
	go func() { done <- b.Session(context.Background(), r, op.out) }()
	t.Cleanup(func() { w.Close() })
	return op, done
}

func (o *operator) typeln(s string) { o.in.Write([]byte(s + "\r")) }

// see waits until want appears after what was already seen.
func (o *operator) see(want string) {
	o.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s := o.out.String()
		if i := strings.Index(s[o.pos:], want); i >= 0 {
			o.pos += i + len(want)
			return
		}
	}
	o.t.Fatalf("the console never showed %q; it shows:\n%s", want, o.out.String()[o.pos:])
}

func testBox() (*Box, *[]string) {
	var did []string
	var mu sync.Mutex
	note := func(s string) {
		mu.Lock()
		did = append(did, s)
		mu.Unlock()
	}
	b := &Box{
		Banner: func() Banner {
			return Banner{Version: "1.2.0", Serial: "KEEL-42", Slot: "a", Addresses: []string{"eth0 10.0.2.15/24"},
				Fingerprint: "ab:cd", LastBoot: "base 1.3.0 in slot b failed its health check (the application did not answer); slot a runs 1.2.0 again"}
		},
		Login: func(u, p string) (bool, string) {
			if u == "admin" && p == "right-pass" {
				return true, ""
			}
			return false, ""
		},
		Status:    func() string { return "slot a: 1.2.0, committed\nslot b: 1.3.0, bad" },
		OtherSlot: func() (string, string, error) { return "b", "1.3.0", nil },
		BootOtherOnce: func() error {
			note("boot-once")
			return nil
		},
		NetworkDHCP: func() (Change, error) {
			note("dhcp")
			return Change{Summary: "every interface uses DHCP", Deadline: time.Now().Add(time.Minute), Confirm: func() error { note("confirmed"); return nil }}, nil
		},
		FactoryReset: func(mode, then string) error { note("reset " + mode + " " + then); return nil },
		Reboot:       func() error { note("reboot"); return nil },
		ResetAdmin:   func() (string, error) { note("admin"); return "new-pass", nil },
	}
	return b, &did
}

func TestConsoleLoginBannerAndMenu(t *testing.T) {
	b, did := testBox()
	op, done := start(t, b)
	op.see("keel 1.2.0  serial KEEL-42  slot a")
	op.see("last boot: base 1.3.0 in slot b failed its health check")
	op.see("login: ")
	op.typeln("admin")
	op.see("password: ")
	op.typeln("wrong")
	op.see("login incorrect")
	if strings.Contains(op.out.String(), "wrong") {
		t.Fatal("the password was echoed")
	}
	op.see("login: ")
	op.typeln("admin")
	op.typeln("right-pass")
	op.see(" 1  Status and last boot result")
	op.see(" 8  Reset the admin password (not available)")
	op.see("14  Format the data partition (not available)")
	op.see("admin> choose a number: ")

	op.typeln("1")
	op.see("slot b: 1.3.0, bad")
	op.typeln("8")
	op.see(`only in a boot of GRUB's "recovery console" entry`)
	op.typeln("99")
	op.see("99 is not a number of the menu")

	// Ctrl-C in the middle of an entry goes back to the menu.
	op.typeln("11")
	op.see("mode (quick or secure): ")
	op.in.Write([]byte{0x03})
	op.see("stopped; back to the menu")
	op.see("choose a number: ")

	op.typeln("4")
	op.see("Type yes to do it: ")
	op.typeln("yes")
	op.see("Type yes to reboot now: ")
	op.typeln("no")
	op.see("not done")

	op.typeln("6")
	op.typeln("yes")
	op.see("keep it? ")
	op.typeln("yes")
	op.see("confirmed and saved")

	op.typeln("11")
	op.typeln("secure")
	op.typeln("poweroff")
	op.see("Type the appliance's serial (KEEL-42) to reset it: ")
	op.typeln("KEEL-4")
	op.see("not done")
	op.typeln("11")
	op.typeln("quick")
	op.typeln("reboot")
	op.typeln("KEEL-42")
	op.see("the factory reset begins")

	op.typeln("0")
	op.see("logged out")
	op.see("login: ")
	op.in.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("session ended with %v", err)
	}
	want := []string{"boot-once", "dhcp", "confirmed", "reset quick reboot"}
	if strings.Join(*did, ",") != strings.Join(want, ",") {
		t.Fatalf("did %v, want %v", *did, want)
	}
}

func TestConsoleLogsOutWhenIdle(t *testing.T) {
	b, _ := testBox()
	b.Idle = 100 * time.Millisecond
	op, _ := start(t, b)
	op.typeln("admin")
	op.typeln("right-pass")
	op.see("choose a number: ")
	op.see("logged out after 100ms without a key")
	op.see("login: ")
}

func TestRingKeepsTheLastLines(t *testing.T) {
	r := NewRing(20)
	for _, l := range []string{"first line\n", "second line\n", "third\n"} {
		r.Write([]byte(l))
	}
	if got := r.String(); got != "(earlier lines are gone)\nsecond line\nthird\n" {
		t.Fatalf("%q", got)
	}
}

func TestWrapBreaksAtSpaces(t *testing.T) {
	if got := wrap("aaa bbb ccc", 7, "  "); got != "aaa bbb\n  ccc" {
		t.Fatalf("%q", got)
	}
}
