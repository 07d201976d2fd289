package main

import (
	"os"
	"strconv"
	"strings"

	"keel.dev/keel/agent/apps"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/agent/timesync"
	"keel.dev/keel/image/layout"
)

// Status is GET /api/v1/status.
type Status struct {
	Base struct {
		Version string       `json:"version"`
		Slot    layout.Label `json:"slot"`
	} `json:"base"`
	Boot struct {
		Committed      bool       `json:"committed"`
		Trial          bool       `json:"trial"`
		TriesLeft      int        `json:"tries_left"`
		Recovery       bool       `json:"recovery"`
		RecoveryReason string     `json:"recovery_reason,omitempty"`
		LastResult     string     `json:"last_result"`
		BootStateCopy  slots.Copy `json:"boot_state_copy"`
	} `json:"boot"`
	Data struct {
		State string `json:"state"` // mounted, formatted, unusable, missing
	} `json:"data"`
	Agent struct {
		RSSBytes int64 `json:"rss_bytes"` // resident memory of PID 1
	} `json:"agent"`
	App      *apps.Status     `json:"app,omitempty"` // nil when the data partition is not mounted
	Network  *netcfg.Status   `json:"network,omitempty"`
	Time     *timesync.Status `json:"time,omitempty"`
	Serial   string           `json:"serial"`
	Hostname string           `json:"hostname"`
	Kernel   string           `json:"kernel"`
	UptimeS  float64          `json:"uptime_s"`
}

func (a *agent) status() Status {
	var s Status
	s.Base.Version = a.version()
	s.Base.Slot = a.boot0.Slot
	s.Serial, s.Kernel = a.serial, a.kernel
	s.Hostname, _ = os.Hostname()
	if a.network != nil {
		ns := a.network.Status()
		s.Network = &ns
	}
	if a.clock != nil {
		ts := a.clock.Status()
		s.Time = &ts
	}
	if m := a.apps; m != nil {
		as := m.Status()
		s.App = &as
	}
	s.UptimeS = uptime()
	s.Agent.RSSBytes = rss()
	s.Boot.Trial = a.boot0.Mode == slots.ModeTrial
	s.Boot.TriesLeft, _ = strconv.Atoi(a.boot0.Tries)
	s.Boot.BootStateCopy = a.boot0.EnvFrom
	a.mu.Lock()
	defer a.mu.Unlock()
	s.Boot.Committed = a.committed
	s.Boot.Recovery = a.recovery != ""
	s.Boot.RecoveryReason = a.recovery
	s.Boot.LastResult = a.result
	s.Data.State = a.dataState
	return s
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
