package failover

import (
	"net"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func autoSettings() Settings {
	s := DefaultSettings()
	s.Automatic = true
	return s
}

func backupMonitor(s Settings) *monitor {
	return newMonitor("KEEL-B", State{Role: RoleBackup, Epoch: 3, Settings: s}, t0, 10*time.Second)
}

func kinds(as []action) []actionKind {
	var k []actionKind
	for _, a := range as {
		k = append(k, a.kind)
	}
	return k
}

// run ticks m every 200 ms from `from` to `to`, answering checks with
// res (started when asked), and returns the first takeover and its time.
func run(m *monitor, from, to time.Time, res func(started time.Time) checkResult) (action, time.Time, bool) {
	for now := from; !now.After(to); now = now.Add(200 * time.Millisecond) {
		acts := m.tick(now)
		for len(acts) > 0 {
			a := acts[0]
			acts = acts[1:]
			switch a.kind {
			case actCheck:
				acts = append(acts, m.checkDone(now, res(now))...)
			case actPromote:
				return a, now, true
			}
		}
	}
	return action{}, time.Time{}, false
}

func witnessAnswers(started time.Time) checkResult {
	return checkResult{started: started, witness: "192.0.2.1", witnessOK: true}
}

func TestBackupTakesOverAfterTheDetectionTime(t *testing.T) {
	m := backupMonitor(autoSettings())
	last := t0.Add(20 * time.Second)
	m.heartbeat(last, heartbeat{Role: RolePrimary, Epoch: 5, Serial: "KEEL-A"})
	if m.epoch != 5 {
		t.Fatalf("the backup did not adopt the primary's epoch: %d", m.epoch)
	}
	var checkedAt time.Time
	a, at, ok := run(m, last.Add(200*time.Millisecond), last.Add(5*time.Second), func(s time.Time) checkResult {
		checkedAt = s
		return witnessAnswers(s)
	})
	if !ok {
		t.Fatal("no takeover")
	}
	if got := at.Sub(last); got != time.Second {
		t.Errorf("took over %s after the last heartbeat, want the detection time 1s", got)
	}
	if lead := at.Sub(checkedAt); lead <= 0 || lead > 400*time.Millisecond {
		t.Errorf("the checks ran %s before the takeover; they should run ahead of it, at most 400ms", lead)
	}
	if a.epoch != 6 {
		t.Errorf("epoch %d, want 6 (the primary's 5, raised)", a.epoch)
	}
}

func TestBackupStaysWhenTheWitnessIsSilentToo(t *testing.T) {
	m := backupMonitor(autoSettings())
	last := t0.Add(20 * time.Second)
	m.heartbeat(last, heartbeat{Role: RolePrimary, Epoch: 3, Serial: "KEEL-A"})
	cut := func(s time.Time) checkResult {
		return checkResult{started: s, witness: "192.0.2.1", why: "no answer within 400ms"}
	}
	if _, _, ok := run(m, last.Add(200*time.Millisecond), last.Add(10*time.Second), cut); ok {
		t.Fatal("took over without the witness")
	}
	if !strings.Contains(m.held, "witness 192.0.2.1 does not answer") || !strings.Contains(m.held, "cut off") {
		t.Errorf("status does not say why: %q", m.held)
	}
	// The link comes back, the primary is still gone: it takes over at
	// the next check.
	_, at, ok := run(m, last.Add(10*time.Second), last.Add(15*time.Second), witnessAnswers)
	if !ok || at.Sub(last) > 11200*time.Millisecond {
		t.Fatalf("no takeover after the witness answered again (ok %v at %s)", ok, at.Sub(last))
	}
}

func TestBackupStaysWhileTheSharedAddressStillAnswers(t *testing.T) {
	m := backupMonitor(autoSettings())
	last := t0.Add(20 * time.Second)
	m.heartbeat(last, heartbeat{Role: RolePrimary, Epoch: 3, Serial: "KEEL-A"})
	mac, _ := net.ParseMAC("52:54:00:00:00:0a")
	owned := func(s time.Time) checkResult {
		r := witnessAnswers(s)
		r.owner, r.ownerAddr = mac, "192.0.2.100"
		return r
	}
	if _, _, ok := run(m, last.Add(200*time.Millisecond), last.Add(5*time.Second), owned); ok {
		t.Fatal("took over an address another host still answers for")
	}
	if !strings.Contains(m.held, "52:54:00:00:00:0a") {
		t.Errorf("status does not name the owner: %q", m.held)
	}
}

func TestAHeartbeatDuringTheCheckCancelsTheTakeover(t *testing.T) {
	m := backupMonitor(autoSettings())
	last := t0.Add(20 * time.Second)
	m.heartbeat(last, heartbeat{Role: RolePrimary, Epoch: 3, Serial: "KEEL-A"})
	now := last.Add(600 * time.Millisecond)
	if k := kinds(m.tick(now)); len(k) != 1 || k[0] != actCheck {
		t.Fatalf("at 600ms of silence: %v, want a check", k)
	}
	// The primary was only slow: its heartbeat arrives before the check
	// ends, so the check's result is about a silence that is over.
	m.heartbeat(now.Add(100*time.Millisecond), heartbeat{Role: RolePrimary, Epoch: 3, Serial: "KEEL-A"})
	if acts := m.checkDone(now.Add(500*time.Millisecond), witnessAnswers(now)); len(acts) != 0 {
		t.Fatalf("a stale check led to %v", kinds(acts))
	}
}

func TestBackupWaitsForASlowPrimaryAfterItsBoot(t *testing.T) {
	m := backupMonitor(autoSettings())
	_, at, ok := run(m, t0, t0.Add(30*time.Second), witnessAnswers)
	if !ok {
		t.Fatal("never took over from a primary that never answered")
	}
	if got := at.Sub(t0); got != 10*time.Second {
		t.Errorf("took over %s after its start, want the boot grace of 10s", got)
	}
}

func TestManualRelationshipNeverTakesOver(t *testing.T) {
	m := backupMonitor(DefaultSettings())
	m.heartbeat(t0, heartbeat{Role: RolePrimary, Epoch: 3, Serial: "KEEL-A"})
	if _, _, ok := run(m, t0, t0.Add(time.Minute), witnessAnswers); ok {
		t.Fatal("took over with automatic failover off")
	}
}

func TestSplitBrainHasOneWinnerSeenFromBothSides(t *testing.T) {
	for _, c := range []struct {
		name           string
		epochA, epochB uint64
		winner         string
	}{
		{"higher epoch wins", 7, 8, "KEEL-B"},
		{"higher epoch wins whatever the serial", 9, 8, "KEEL-A"},
		{"a tie goes to the lower serial", 8, 8, "KEEL-A"},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := newMonitor("KEEL-A", State{Role: RolePrimary, Epoch: c.epochA, Settings: autoSettings()}, t0, 0)
			b := newMonitor("KEEL-B", State{Role: RolePrimary, Epoch: c.epochB, Settings: autoSettings()}, t0, 0)
			now := t0.Add(5 * time.Second)
			actsA := a.heartbeat(now, heartbeat{Role: RolePrimary, Epoch: c.epochB, Serial: "KEEL-B"})
			actsB := b.heartbeat(now, heartbeat{Role: RolePrimary, Epoch: c.epochA, Serial: "KEEL-A"})
			loser, winner := actsA, actsB
			if c.winner == "KEEL-A" {
				loser, winner = actsB, actsA
			}
			if k := kinds(loser); len(k) != 1 || k[0] != actDemote {
				t.Errorf("the loser did %v, want to give way", k)
			}
			if k := kinds(winner); len(k) != 1 || k[0] != actAnnounce {
				t.Errorf("the winner did %v, want to announce again", k)
			}
		})
	}
}

func TestTwoBackupsElectOne(t *testing.T) {
	a := newMonitor("KEEL-A", State{Role: RoleBackup, Epoch: 4, Settings: autoSettings()}, t0, 0)
	b := newMonitor("KEEL-B", State{Role: RoleBackup, Epoch: 4, Settings: autoSettings()}, t0, 0)
	var promoted []string
	for now := t0; now.Before(t0.Add(3 * time.Second)); now = now.Add(200 * time.Millisecond) {
		for _, x := range a.heartbeat(now, heartbeat{Role: RoleBackup, Epoch: 4, Serial: "KEEL-B"}) {
			if x.kind == actPromote {
				promoted = append(promoted, "KEEL-A")
				a.setRole(RolePrimary, x.epoch, now)
			}
		}
		for _, x := range b.heartbeat(now, heartbeat{Role: a.role, Epoch: a.epoch, Serial: "KEEL-A"}) {
			if x.kind == actPromote {
				promoted = append(promoted, "KEEL-B")
			}
		}
	}
	if len(promoted) != 1 || promoted[0] != "KEEL-A" || a.epoch != 5 || b.epoch != 5 {
		t.Fatalf("promoted %v, epochs %d/%d; want KEEL-A alone, with epoch 5 on both", promoted, a.epoch, b.epoch)
	}
}

func TestPrimaryAnnouncesPeriodically(t *testing.T) {
	m := newMonitor("KEEL-A", State{Role: RolePrimary, Epoch: 1, Settings: DefaultSettings()}, t0, 0)
	var at []time.Duration
	for now := t0; now.Before(t0.Add(31 * time.Second)); now = now.Add(200 * time.Millisecond) {
		for _, a := range m.tick(now) {
			if a.kind == actAnnounce {
				at = append(at, now.Sub(t0))
			}
		}
	}
	if len(at) != 3 || at[0] != 10*time.Second {
		t.Fatalf("announced at %v, want every 10s", at)
	}
}
