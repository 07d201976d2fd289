package main

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/image/layout"
)

func (a *agent) status() api.Status {
	var s api.Status
	s.Base.Version = a.version()
	s.Base.Slot = string(a.boot0.Slot)
	if a.esp != nil {
		s.Base.Floor, _ = a.esp.Floor()
		if st, _, err := a.esp.Read(); err == nil {
			for _, l := range layout.Labels {
				sl := st.Slot(l)
				s.Base.Slots = append(s.Base.Slots, api.BaseSlot{
					Slot: string(l), Version: sl.Version, Bootable: sl.Bootable, Committed: sl.Good,
					TriesLeft: sl.Tries, Running: l == a.boot0.Slot, Default: l == st.Default,
				})
			}
		}
	}
	s.Serial, s.Kernel = a.serial, a.kernel
	s.Hostname, _ = os.Hostname()
	if a.network != nil {
		s.Network = encode(a.network.Status())
	}
	if a.clock != nil {
		s.Time = encode(a.clock.Status())
	}
	if m := a.apps; m != nil {
		s.App = encode(m.Status())
	}
	if a.failover != nil {
		var held func(failover.SharedAddress) bool
		if a.floating != nil {
			held = sharedHeld(a.floating)
		}
		s.Failover = encode(a.failover.Status(held))
	}
	if a.id != nil {
		s.Certificate.SHA256, s.Certificate.PublicKeySHA256 = a.id.Fingerprint(), a.id.PublicKeyPin()
	}
	s.UptimeS = uptime()
	s.Agent.RSSBytes = rss()
	s.Boot.Trial = a.boot0.Mode == slots.ModeTrial
	s.Boot.TriesLeft, _ = strconv.Atoi(a.boot0.Tries)
	s.Boot.BootStateCopy = string(a.boot0.EnvFrom)
	a.mu.Lock()
	defer a.mu.Unlock()
	s.Boot.Committed = a.committed
	s.Boot.Recovery = a.recovery != ""
	s.Boot.RecoveryReason = a.recovery
	s.Boot.LastResult = a.result
	s.Data.State = a.dataState
	return s
}

// encode is a subsystem's part of the status; the types are plain data,
// so it cannot fail.
func encode(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

// rss reads PID 1's resident set size from /proc/self/status.
func rss() int64 {
	for _, line := range strings.Split(readTrim("/proc/self/status"), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
