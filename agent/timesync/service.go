package timesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/beevik/ntp"

	"keel.dev/keel/agent/supervisor"
)

// Defaults; see the fields of Service.
const (
	DefaultStepThreshold = 128 * time.Millisecond // as ntpd and chrony's makestep use
	DefaultMinPoll       = 64 * time.Second
	DefaultMaxPoll       = 1024 * time.Second
	// DefaultRTCSaveInterval is the kernel's "11 minute mode": often
	// enough that the hardware clock's drift stays far below a second.
	DefaultRTCSaveInterval = 11 * time.Minute
	// maxRTCBootStep bounds the step taken from the hardware clock at
	// boot: the kernel set the clock from it with at most a second's
	// error, so a larger step means something else set the clock since.
	maxRTCBootStep = 2 * time.Second
	queryTimeout   = 3 * time.Second
)

// QueryFunc asks one NTP server how far clock now is from its time.
type QueryFunc func(ctx context.Context, server string, now func() time.Time) (Sample, error)

// Service keeps Clock in step with NTP servers: those configured, or when
// none are, those DHCP handed out.
type Service struct {
	clock Clock
	log   *slog.Logger
	query QueryFunc
	// syncing serialises Sync: two corrections measured against the same
	// clock would each apply the whole offset.
	syncing sync.Mutex

	// StepThreshold: offsets larger than this are stepped, smaller ones
	// slewed. The first correction after start is always a step.
	StepThreshold time.Duration
	// MinPoll and MaxPoll bound the interval between syncs; it doubles
	// while the clock stays close and drops back to MinPoll when it does
	// not or a sync fails.
	MinPoll, MaxPoll time.Duration

	// Hardware, when set, is written after every step and at least every
	// RTCSaveInterval while synchronized, and read at the start of Run.
	Hardware        HardwareClock
	RTCSaveInterval time.Duration

	kick chan struct{}

	mu         sync.Mutex
	configured []string
	dhcp       map[string][]string // by link
	stepped    bool                // a first step has been made
	status     Status
	rtc        RTCStatus
	hwRead     bool // SetFromHardwareClock ran
}

// New makes a service for clock; query may be nil for real NTP queries.
func New(clock Clock, query QueryFunc, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if query == nil {
		query = QueryNTP
	}
	return &Service{
		clock: clock, log: log, query: query,
		StepThreshold: DefaultStepThreshold, MinPoll: DefaultMinPoll, MaxPoll: DefaultMaxPoll,
		RTCSaveInterval: DefaultRTCSaveInterval,
		kick:            make(chan struct{}, 1),
		dhcp:            map[string][]string{},
	}
}

// QueryNTP queries server ("host" or "host:port") with beevik/ntp,
// measuring against now rather than the system clock.
func QueryNTP(ctx context.Context, server string, now func() time.Time) (Sample, error) {
	timeout := queryTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	r, err := ntp.QueryWithOptions(server, ntp.QueryOptions{Timeout: timeout, GetSystemTime: now})
	if err != nil {
		return Sample{}, fmt.Errorf("query %s: %w", server, err)
	}
	if err := r.Validate(); err != nil {
		return Sample{}, fmt.Errorf("query %s: bad answer: %w", server, err)
	}
	return Sample{Server: server, Offset: r.ClockOffset, RTT: r.RTT, Stratum: int(r.Stratum)}, nil
}

// ServerStatus is one server's last answer.
type ServerStatus struct {
	Server   string  `json:"server"`
	OffsetMS float64 `json:"offset_ms,omitempty"`
	RTTMS    float64 `json:"rtt_ms,omitempty"`
	Stratum  int     `json:"stratum,omitempty"`
	Error    string  `json:"error,omitempty"`
}

// Status is what GET /api/v1/time reports.
type Status struct {
	Synchronized bool           `json:"synchronized"`
	OffsetMS     float64        `json:"offset_ms"`        // measured before the correction
	Action       string         `json:"action,omitempty"` // "step" or "slew"
	Server       string         `json:"server,omitempty"`
	LastSync     time.Time      `json:"last_sync,omitzero"`
	LastAttempt  time.Time      `json:"last_attempt,omitzero"`
	Source       string         `json:"source"` // "configured", "dhcp" or "none"
	Servers      []ServerStatus `json:"servers"`
	Error        string         `json:"error,omitempty"`
	RTC          *RTCStatus     `json:"rtc,omitempty"` // nil without a hardware clock
}

// RTCStatus is the hardware clock's part of Status.
type RTCStatus struct {
	// OffsetMS is the hardware clock minus the system clock, measured
	// just after its last write (Written); the boot read takes it off.
	OffsetMS float64   `json:"offset_ms"`
	Written  time.Time `json:"written,omitzero"`
	// Read is when this boot set the clock from the hardware clock, and
	// BootStepMS the step that took.
	Read       time.Time `json:"read,omitzero"`
	BootStepMS float64   `json:"boot_step_ms"`
	Error      string    `json:"error,omitempty"`
}

// SetServers replaces the configured servers; an empty list falls back to
// DHCP's. A sync follows soon.
func (s *Service) SetServers(servers []string) {
	s.mu.Lock()
	s.configured = slices.Clone(servers)
	s.mu.Unlock()
	s.Kick()
}

// SetDHCPServers records the NTP servers (option 42) a link's lease gave;
// nil when the lease ends.
func (s *Service) SetDHCPServers(link string, servers []netip.Addr) {
	var list []string
	for _, a := range servers {
		list = append(list, a.String())
	}
	s.mu.Lock()
	if len(list) == 0 {
		delete(s.dhcp, link)
	} else {
		s.dhcp[link] = list
	}
	s.mu.Unlock()
	s.Kick()
}

// Servers returns the servers in use and where they came from.
func (s *Service) Servers() ([]string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.serversLocked()
}

func (s *Service) serversLocked() ([]string, string) {
	if len(s.configured) > 0 {
		return slices.Clone(s.configured), "configured"
	}
	links := make([]string, 0, len(s.dhcp))
	for l := range s.dhcp {
		links = append(links, l)
	}
	sort.Strings(links)
	var out []string
	for _, l := range links {
		for _, a := range s.dhcp[l] {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, "none"
	}
	return out, "dhcp"
}

// Kick asks Run to sync now rather than at the next poll.
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Status reports the last sync. Synchronized lapses when no sync has
// succeeded for four maximum poll intervals.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Servers = slices.Clone(st.Servers)
	_, st.Source = s.serversLocked()
	st.Synchronized = !st.LastSync.IsZero() && s.clock.Now().Sub(st.LastSync) < 4*s.MaxPoll
	if s.Hardware != nil {
		rtc := s.rtc
		st.RTC = &rtc
	}
	return st
}

// Synced is what the download key checks: the clock is known good.
func (s *Service) Synced() bool { return s.Status().Synchronized }

// Sync queries every server at once, picks the majority's offset and
// corrects the clock by it.
func (s *Service) Sync(ctx context.Context) (Status, error) {
	s.syncing.Lock()
	defer s.syncing.Unlock()
	servers, _ := s.Servers()
	if len(servers) == 0 {
		err := fmt.Errorf("no NTP servers: none configured and none from DHCP")
		s.record(nil, err)
		return s.Status(), err
	}
	results := make([]ServerStatus, len(servers))
	samples := make([]*Sample, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer supervisor.Recover(s.log, "ntp query "+srv)
			sm, err := s.query(ctx, srv, s.clock.Now)
			results[i] = ServerStatus{Server: srv}
			if err != nil {
				results[i].Error = err.Error()
				return
			}
			results[i].OffsetMS, results[i].RTTMS, results[i].Stratum = ms(sm.Offset), ms(sm.RTT), sm.Stratum
			samples[i] = &sm
		}()
	}
	wg.Wait()
	var got []Sample
	for _, sm := range samples {
		if sm != nil {
			got = append(got, *sm)
		}
	}
	pick, n, err := choose(got)
	if err != nil {
		s.record(results, err)
		return s.Status(), err
	}
	s.mu.Lock()
	step := !s.stepped || pick.Offset > s.StepThreshold || pick.Offset < -s.StepThreshold
	s.mu.Unlock()
	action := "slew"
	if step {
		action = "step"
		err = s.clock.Step(pick.Offset)
	} else {
		err = s.clock.Slew(pick.Offset)
	}
	if err != nil {
		s.record(results, err)
		return s.Status(), err
	}
	s.log.Info("clock synchronized", "offset", pick.Offset, "action", action, "server", pick.Server, "agreeing", n, "answered", len(got))
	s.mu.Lock()
	s.stepped = s.stepped || step
	s.status = Status{OffsetMS: ms(pick.Offset), Action: action, Server: pick.Server,
		LastSync: s.clock.Now(), LastAttempt: s.clock.Now(), Servers: results}
	due := s.Hardware != nil && (step || s.clock.Now().Sub(s.rtc.Written) >= s.RTCSaveInterval)
	s.mu.Unlock()
	if due {
		s.saveRTC()
	}
	return s.Status(), nil
}

// saveRTC writes the hardware clock from the (just synchronized) system
// clock. A failure leaves the system clock right and is reported in the
// status: the next boot starts from an older time until NTP answers.
func (s *Service) saveRTC() {
	w, err := s.Hardware.Save()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.log.Warn("hardware clock not written", "err", err)
		s.rtc.Error = err.Error()
		return
	}
	s.log.Info("hardware clock written", "offset", w.Offset)
	s.rtc.OffsetMS, s.rtc.Written, s.rtc.Error = ms(w.Offset), w.At, ""
}

// SetFromHardwareClock steps the clock onto the hardware clock's time, to
// within milliseconds where the kernel's boot read is up to a second off.
// It does not count as the first NTP correction, which still steps.
func (s *Service) SetFromHardwareClock() error {
	// Once per boot, and never after NTP corrected the clock: the
	// supervisor may restart Run.
	s.syncing.Lock()
	defer s.syncing.Unlock()
	s.mu.Lock()
	done := s.Hardware == nil || s.stepped || s.hwRead
	s.hwRead = true
	s.mu.Unlock()
	if done {
		return nil
	}
	d, last, err := s.Hardware.Read()
	s.mu.Lock()
	s.rtc.OffsetMS, s.rtc.Written = ms(last.Offset), last.At
	s.mu.Unlock()
	if err != nil && !errors.Is(err, ErrRTCOffsetLost) {
		return s.rtcFailed(err)
	}
	if d > maxRTCBootStep || d < -maxRTCBootStep {
		return s.rtcFailed(fmt.Errorf("the hardware clock is %v from the system clock, more than the kernel's read can be off; something else set the clock, so it is left alone", d))
	}
	if serr := s.clock.Step(d); serr != nil {
		return s.rtcFailed(serr)
	}
	s.log.Info("clock set from the hardware clock", "step", d, "rtc_offset", last.Offset)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rtc.Read, s.rtc.BootStepMS = s.clock.Now().UTC(), ms(d)
	if err != nil {
		s.rtc.Error = err.Error()
	}
	return err
}

func (s *Service) rtcFailed(err error) error {
	s.log.Warn("clock not set from the hardware clock", "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rtc.Error = err.Error()
	return err
}

func (s *Service) record(results []ServerStatus, err error) {
	s.log.Warn("clock not synchronized", "err", err)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Error = err.Error()
	s.status.LastAttempt = s.clock.Now()
	s.status.Servers = results
}

// Run sets the clock from the hardware clock, then syncs at once and at an
// adaptive interval until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	s.SetFromHardwareClock() // its failure is in the status and the log
	interval := s.MinPoll
	for {
		st, err := s.Sync(ctx)
		switch {
		case err != nil:
			interval = s.MinPoll
		case st.Action == "slew" && abs(st.OffsetMS) < ms(s.StepThreshold)/4:
			interval = min(2*interval, s.MaxPoll)
		default:
			interval = s.MinPoll
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.kick:
			t.Stop()
		case <-t.C:
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
