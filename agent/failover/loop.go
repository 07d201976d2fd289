package failover

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"time"

	"keel.dev/keel/agent/supervisor"
)

// sentRing remembers when this box sent its recent heartbeats, so an echo
// can be told fresh (the peer answered something recent) from stale.
type sentRing struct {
	seq [256]uint64
	at  [256]time.Time
}

func (r *sentRing) add(seq uint64, at time.Time) {
	r.seq[seq%256], r.at[seq%256] = seq, at
}

func (r *sentRing) sentAt(seq uint64) (time.Time, bool) {
	if r.seq[seq%256] != seq || r.at[seq%256].IsZero() {
		return time.Time{}, false
	}
	return r.at[seq%256], true
}

type received struct {
	h  heartbeat
	at time.Time
}

// heartbeats sends a heartbeat to the peer every interval, takes the
// peer's, and carries out what the monitor decides, until ctx ends.
func (s *Service) heartbeats(ctx context.Context, st State) {
	log := s.log().With("peer", st.Peer.Serial)
	key := []byte(s.Key())
	if len(key) == 0 {
		log.Error("no inter-appliance key: the pair exchanges no heartbeats")
		return
	}
	var conn *net.UDPConn
	err := s.NS.Do(func() error {
		var err error
		la := &net.UDPAddr{Port: s.hbPort()}
		if s.HeartbeatAddr.IsValid() {
			la.IP = s.HeartbeatAddr.AsSlice()
		}
		conn, err = net.ListenUDP("udp", la)
		return err
	})
	if err != nil {
		log.Error("no heartbeat socket: the pair cannot watch each other", "port", s.hbPort(), "err", err)
		return
	}
	defer conn.Close()
	context.AfterFunc(ctx, func() { conn.Close() })

	var b [8]byte
	rand.Read(b[:])
	boot := binary.BigEndian.Uint64(b[:]) | 1
	var seq uint64
	var sent sentRing
	var last received // the peer's last heartbeat, echoed back
	m := newMonitor(s.Serial, st, s.now(), s.bootGrace())
	rx := make(chan received, 16)
	checks := make(chan checkResult, 1)
	supervisor.Go(log, "heartbeat receiver", func() {
		buf := make([]byte, 512)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			h, err := parseHeartbeat(buf[:n], key, s.Serial)
			if err != nil || h.Serial != st.Peer.Serial {
				continue
			}
			select {
			case rx <- received{h, s.now()}:
			default:
			}
		}
	})
	var peer *net.UDPAddr
	resolve := func() {
		var err error
		host := st.Peer.Address
		peer, err = net.ResolveUDPAddr("udp", net.JoinHostPort(host, strconv.Itoa(s.hbPort())))
		if err != nil {
			log.Warn("the peer's address does not resolve", "address", host, "err", err)
		}
	}
	resolve()
	send := func(now time.Time) {
		if peer == nil {
			resolve()
			if peer == nil {
				return
			}
		}
		seq++
		sent.add(seq, now)
		h := heartbeat{Role: m.role, Auto: m.set.Automatic, Epoch: m.epoch, Boot: boot, Seq: seq, EchoB: last.h.Boot, EchoS: last.h.Seq, Serial: s.Serial}
		conn.WriteToUDP(h.marshal(key, st.Peer.Serial), peer)
	}
	do := func(now time.Time, acts []action) {
		for _, a := range acts {
			switch a.kind {
			case actCheck:
				log.Info("the primary is silent; asking the witness and probing the shared addresses", "silent", now.Sub(m.heard).Round(time.Millisecond))
				supervisor.Go(log, "takeover check", func() {
					r := s.check(ctx, now)
					select {
					case checks <- r:
					case <-ctx.Done():
					}
				})
			case actPromote:
				m.setRole(RolePrimary, a.epoch, now)
				send(now) // the peer learns at once
				supervisor.Go(log, "take over", func() {
					if err := s.setRole(RolePrimary, a.epoch, a.why, roleOpts{force: true}); err != nil {
						log.Error("takeover failed", "err", err)
					}
				})
			case actDemote:
				m.setRole(RoleBackup, a.epoch, now)
				send(now)
				supervisor.Go(log, "give way", func() {
					if err := s.setRole(RoleBackup, a.epoch, a.why, roleOpts{diverged: true}); err != nil {
						log.Error("giving way failed", "err", err)
					}
				})
			case actAnnounce:
				supervisor.Go(log, "announce", s.announce)
			}
		}
		s.mu.Lock()
		s.held = m.held
		s.mu.Unlock()
	}

	// stale counts heartbeats that proved nothing since the last fresh
	// one; adopting is set while the primary's epoch is being saved.
	stale, adopting, adopted := 0, false, make(chan struct{}, 1)
	t := time.NewTicker(st.Settings.HeartbeatInterval.D())
	defer t.Stop()
	// deadline wakes the loop when the monitor has a decision due between
	// two ticks.
	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()
	for {
		if at, ok := m.due(s.now()); ok {
			deadline.Reset(time.Until(at))
		}
		select {
		case <-deadline.C:
			now := s.now()
			do(now, m.tick(now))
		case <-adopted:
			adopting = false
		case <-ctx.Done():
			return
		case <-t.C:
			now := s.now()
			send(now)
			do(now, m.tick(now))
		case r := <-rx:
			last = r
			at, ok := sent.sentAt(r.h.EchoS)
			if r.h.EchoB != boot || !ok || r.at.Sub(at) > m.set.DetectionTime.D() {
				stale++
				continue // alive, maybe, but not proven: an echo of nothing recent
			}
			s.mu.Lock()
			s.peerSeen = peerSeen{at: r.at, role: r.h.Role, epoch: r.h.Epoch, auto: r.h.Auto}
			s.mu.Unlock()
			if gap := r.at.Sub(m.heard); !m.heard.IsZero() && gap > m.set.DetectionTime.D()/2 {
				log.Info("heartbeats resumed", "gap", gap.Round(time.Millisecond), "stale", stale)
			}
			stale = 0
			acts := m.heartbeat(r.at, r.h)
			if e := m.epoch; m.role == RoleBackup && e > s.State().Epoch && !adopting {
				adopting = true
				supervisor.Go(log, "adopt the primary's epoch", func() { s.adoptEpoch(e); adopted <- struct{}{} })
			}
			do(r.at, acts)
		case r := <-checks:
			do(s.now(), m.checkDone(s.now(), r))
		case <-s.rolec:
			cur := s.State()
			if cur.Role != m.role || cur.Epoch != m.epoch {
				m.setRole(cur.Role, cur.Epoch, s.now())
				send(s.now())
			}
		}
	}
}

func (s *Service) bootGrace() time.Duration {
	if s.BootGrace > 0 {
		return s.BootGrace
	}
	return 10 * time.Second
}
