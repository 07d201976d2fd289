package failover

import (
	"fmt"
	"net"
	"time"
)

// monitor decides, from the heartbeats and the clock, when this box
// takes over and when it gives way. It does no I/O: the heartbeat loop
// feeds it and carries out the actions it returns, so every rule is
// tested with a made-up clock.
type monitor struct {
	self      string // this box's serial
	role      Role
	epoch     uint64
	set       Settings
	started   time.Time
	bootGrace time.Duration

	heard time.Time // when the last fresh heartbeat arrived; zero: none since start
	peer  heartbeat // that heartbeat

	bothBackup   time.Time // since when both boxes say backup
	checking     bool
	checked      *checkResult // the last check that finished
	lastAnnounce time.Time
	// held says why the backup does not take over though the primary is
	// silent ("" when it is not silent, or took over).
	held string
}

// checkResult is what the box found before a takeover: whether the
// witness answered, and whether another host still answers for a shared
// address (the primary's kernel, alive though its heartbeats are not).
type checkResult struct {
	started   time.Time
	witness   string // the address asked
	witnessOK bool
	why       string // why the witness is taken as not answering
	owner     net.HardwareAddr
	ownerAddr string
}

type actionKind int

const (
	actCheck    actionKind = iota + 1 // run the witness check and the conflict probe
	actPromote                        // take over: become primary with epoch
	actDemote                         // give way: become backup
	actAnnounce                       // announce the shared addresses again
)

type action struct {
	kind  actionKind
	epoch uint64
	why   string
}

func newMonitor(self string, st State, now time.Time, bootGrace time.Duration) *monitor {
	return &monitor{self: self, role: st.Role, epoch: st.Epoch, set: st.Settings, started: now, bootGrace: bootGrace, lastAnnounce: now}
}

// wins reports whether (epoch a, serial sa) beats (epoch b, serial sb):
// the higher epoch, then the lower serial. Both boxes compute the same.
func wins(a uint64, sa string, b uint64, sb string) bool {
	if a != b {
		return a > b
	}
	return sa < sb
}

// setRole is a role change made by the service (a takeover, a give-way,
// an operator's command); the monitor starts over from it.
func (m *monitor) setRole(r Role, epoch uint64, now time.Time) {
	m.role, m.epoch = r, epoch
	m.checking, m.checked, m.bothBackup, m.held = false, nil, time.Time{}, ""
	m.lastAnnounce = now
}

// silence is how long the peer has been silent, and how long it must be
// before a takeover: after a boot the backup waits bootGrace for a
// primary that boots as slowly as it did.
func (m *monitor) silence(now time.Time) (since time.Time, need time.Duration) {
	if m.heard.IsZero() {
		return m.started, max(m.set.DetectionTime.D(), m.bootGrace)
	}
	return m.heard, m.set.DetectionTime.D()
}

// lead is how long before the detection time the checks start, so that a
// takeover does not wait for them.
func (m *monitor) lead() time.Duration {
	return min(400*time.Millisecond, m.set.DetectionTime.D()/2)
}

// heartbeat takes a heartbeat that proved the peer alive now.
func (m *monitor) heartbeat(now time.Time, h heartbeat) []action {
	m.heard, m.peer, m.held = now, h, ""
	switch {
	case m.role == RolePrimary && h.Role == RolePrimary:
		m.bothBackup = time.Time{}
		if wins(h.Epoch, h.Serial, m.epoch, m.self) {
			return []action{{kind: actDemote, epoch: max(h.Epoch, m.epoch), why: fmt.Sprintf("split brain: %s is primary too, with epoch %d against this appliance's %d; it wins, so this appliance becomes its backup", h.Serial, h.Epoch, m.epoch)}}
		}
		// The loser gives way; meanwhile switches and neighbours must
		// send to this box.
		if now.Sub(m.lastAnnounce) >= m.set.DetectionTime.D() {
			m.lastAnnounce = now
			return []action{{kind: actAnnounce, why: "split brain: " + h.Serial + " is primary too and gives way"}}
		}
	case m.role == RoleBackup && h.Role == RoleBackup:
		if !m.set.Automatic {
			return nil
		}
		if m.bothBackup.IsZero() {
			m.bothBackup = now
		} else if now.Sub(m.bothBackup) >= m.set.DetectionTime.D() && wins(m.epoch, m.self, h.Epoch, h.Serial) {
			return []action{{kind: actPromote, epoch: max(m.epoch, h.Epoch) + 1, why: "both appliances were backup; this one wins the tie and becomes primary"}}
		}
	default:
		m.bothBackup = time.Time{}
		if m.role == RoleBackup && h.Epoch > m.epoch {
			m.epoch = h.Epoch
		}
	}
	return nil
}

// tick runs every heartbeat interval.
func (m *monitor) tick(now time.Time) []action {
	switch m.role {
	case RolePrimary:
		if now.Sub(m.lastAnnounce) >= m.set.Reannounce.D() {
			m.lastAnnounce = now
			return []action{{kind: actAnnounce, why: "periodic announcement"}}
		}
	case RoleBackup:
		if !m.set.Automatic {
			return nil
		}
		since, need := m.silence(now)
		silent := now.Sub(since)
		if silent < need-m.lead() {
			return nil
		}
		c := m.checked
		fresh := c != nil && !c.started.Before(since)
		if !m.checking && (!fresh || now.Sub(c.started) >= m.set.DetectionTime.D()) {
			m.checking = true
			return []action{{kind: actCheck}}
		}
		if silent < need || !fresh {
			return nil
		}
		switch {
		case !c.witnessOK:
			m.held = fmt.Sprintf("the primary has been silent for %s, but the witness %s does not answer either (%s): this appliance may be the one cut off, so it stays backup", silent.Round(10*time.Millisecond), c.witness, c.why)
		case c.owner != nil:
			m.held = fmt.Sprintf("the primary's heartbeats stopped %s ago, but %s still answers from %s: the primary's system is still up, so this appliance stays backup", silent.Round(10*time.Millisecond), c.ownerAddr, c.owner)
		default:
			return []action{{kind: actPromote, epoch: max(m.epoch, m.peer.Epoch) + 1,
				why: fmt.Sprintf("the primary was silent for %s and the witness %s answers: this appliance takes over", silent.Round(10*time.Millisecond), c.witness)}}
		}
	}
	return nil
}

// due is when tick next has something to decide (the checks' start, the
// detection time's end), if sooner than the next heartbeat interval: a
// takeover should not wait for the interval's tick.
func (m *monitor) due(now time.Time) (time.Time, bool) {
	if m.role != RoleBackup || !m.set.Automatic {
		return time.Time{}, false
	}
	since, need := m.silence(now)
	for _, t := range []time.Time{since.Add(need - m.lead()), since.Add(need)} {
		if t.After(now) {
			return t, true
		}
	}
	return time.Time{}, false
}

// checkDone takes a check's result; it may complete a takeover at once.
func (m *monitor) checkDone(now time.Time, r checkResult) []action {
	m.checking = false
	m.checked = &r
	return m.tick(now)
}
