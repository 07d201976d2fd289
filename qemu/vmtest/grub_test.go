package vmtest

import (
	"os"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/qemu"
)

// The GRUB slot state machine, each case from a boot state the test writes
// into an image with both slots filled (a: 1.0.0, b: 1.1.0).
func TestGRUBStateMachine(t *testing.T) {
	e := Require(t)
	base := e.BuildImage(t, t.TempDir(), "1.0.0", "1.1.0")

	cases := []struct {
		name      string
		state     func(*bootstate.State)
		corrupt   bool // damage the primary copy after writing the state
		slot      string
		version   string
		trial     bool
		tries     int
		recovery  bool
		result    string // in boot.last_result
		committed bool
		menu      bool // GRUB draws its menu (else the wait is hidden)
		after     func(t *testing.T, st *bootstate.State)
		console   func(t *testing.T, vm *qemu.VM) // at the serial console, before the power-off
	}{
		{
			name: "committed slot boots", state: func(s *bootstate.State) {},
			slot: "a", version: "1.0.0", committed: true, result: "Booted committed slot a",
		},
		{
			name: "trial slot boots, loses a try, commits",
			state: func(s *bootstate.State) {
				s.Default, s.B.Good, s.B.Tries = "b", false, 3
			},
			slot: "b", version: "1.1.0", trial: true, tries: 2, committed: true, result: "committed (2 tries were left)",
			after: func(t *testing.T, st *bootstate.State) {
				if !st.B.Good || st.Default != "b" || st.LastGood != "b" {
					t.Errorf("after the commit: %+v", st)
				}
			},
		},
		{
			name: "trial slot without tries falls back",
			state: func(s *bootstate.State) {
				s.Default, s.B.Good, s.B.Tries = "b", false, 0
			},
			slot: "a", version: "1.0.0", committed: true, result: "did not come up healthy", menu: true,
			after: func(t *testing.T, st *bootstate.State) {
				if st.B.Bootable || st.Default != "a" {
					t.Errorf("the failed slot is not marked bad: %+v", st)
				}
			},
		},
		{
			name: "nothing bootable boots recovery",
			state: func(s *bootstate.State) {
				s.A.Bootable, s.B.Bootable = false, false
			},
			slot: "a", version: "1.0.0", recovery: true, result: "recovery mode", menu: true,
			// The console's banner says what happened, and the
			// network can still be reset to DHCP from there.
			console: func(t *testing.T, vm *qemu.VM) {
				// Enter draws the banner again: the first one and the
				// agent's ready line reach the port in either order.
				send(t, vm, "\r")
				expect(t, vm, `RECOVERY MODE: `+words("GRUB found no bootable base slot and booted the last good one in recovery mode"), time.Minute)
				consoleLogin(t, vm, TestPassword)
				send(t, vm, "6\r")
				expect(t, vm, `Type yes to do it: `, time.Minute)
				send(t, vm, "yes\r")
				expect(t, vm, `every interface now asks DHCP for its address`, time.Minute)
				expect(t, vm, `keep it\? `, time.Minute)
				send(t, vm, "yes\r")
				expect(t, vm, `confirmed and saved`, time.Minute)
			},
		},
		{
			name:  "corrupted primary copy still boots",
			state: func(s *bootstate.State) {}, corrupt: true,
			slot: "a", version: "1.0.0", committed: true, result: "repaired from the backup copy",
			after: func(t *testing.T, st *bootstate.State) {},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			img := CopyImage(t, base)
			st := bootstate.Initial("1.0.0", "1.1.0")
			c.state(&st)
			if err := diskimage.WriteBootState(img, st); err != nil {
				t.Fatal(err)
			}
			if c.corrupt {
				block, _ := st.Encode()
				copy(block[30:], []byte("\x00garbage\xff written by a torn write"))
				if err := diskimage.WriteESPFile(img, bootstate.PrimaryPath, block); err != nil {
					t.Fatal(err)
				}
			}
			vm := Boot(t, qemu.Config{Image: img})
			WaitReady(t, vm)
			got := GetStatus(t, vm, TestPassword)
			if got.Base.Slot != c.slot || got.Base.Version != c.version || got.Boot.Trial != c.trial ||
				got.Boot.Recovery != c.recovery || got.Boot.Committed != c.committed || (c.trial && got.Boot.TriesLeft != c.tries) {
				t.Errorf("status %+v", got)
			}
			if !strings.Contains(got.Boot.LastResult, c.result) {
				t.Errorf("last_result %q does not say %q", got.Boot.LastResult, c.result)
			}
			if shown := strings.Contains(vm.Output(), "Use the ^ and v keys"); shown != c.menu {
				t.Errorf("GRUB drew its menu: %v, want %v", shown, c.menu)
			}
			if c.recovery && !strings.Contains(vm.Output(), "RECOVERY MODE") {
				t.Error("the console does not say the box is in recovery mode")
			}
			if c.console != nil {
				c.console(t, vm)
			}
			PowerOff(t, vm)
			if c.after != nil {
				raw := RawDisk(t, vm)
				after, which, err := diskimage.ReadBootState(raw)
				if err != nil {
					t.Fatal(err)
				}
				if which != "primary" {
					t.Errorf("after boot the state comes from the %s copy; the primary was not repaired", which)
				}
				c.after(t, after)
				os.Remove(raw)
			}
		})
	}
}
