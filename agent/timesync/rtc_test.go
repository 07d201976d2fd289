package timesync

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// simTime is true time for the RTC tests: Sleep advances it, and every
// read of the RTC costs readCost, as the I/O port accesses do.
type simTime struct{ t time.Time }

const readCost = 40 * time.Microsecond

func (c *simTime) Sleep(d time.Duration) {
	if d > 0 {
		c.t = c.t.Add(d)
	}
}

// simRTC counts whole seconds from its last set. divReset is an MC146818
// whose divider restarts on a set (first tick 500 ms later); without it
// the old sub-second phase carries on, as on AMD chipsets and QEMU's
// default CPU.
type simRTC struct {
	clock    *simTime
	value    time.Time     // the second set
	at       time.Time     // true time of the set
	frac     time.Duration // sub-second count at the set
	divReset bool
	stopped  bool
}

func (r *simRTC) Get() (time.Time, error) {
	r.clock.t = r.clock.t.Add(readCost)
	if r.stopped {
		return r.value, nil
	}
	return r.value.Add((r.clock.t.Sub(r.at) + r.frac).Truncate(time.Second)), nil
}

func (r *simRTC) Close() error { return nil }

func (r *simRTC) Set(v time.Time) error {
	now := r.clock.t
	if r.divReset {
		r.frac = 500 * time.Millisecond
	} else {
		r.frac = (now.Sub(r.at) + r.frac) % time.Second
	}
	r.value, r.at = v.Truncate(time.Second), now
	return nil
}

// newSim makes a hardware clock that ticks phase after true seconds, and a
// box whose system clock is skew off true time.
func newSim(phase time.Duration, divReset bool, state string, skew *time.Duration) (*simTime, *simRTC, *RTC) {
	clock := &simTime{t: time.Date(2026, 11, 27, 12, 0, 0, 123456789, time.UTC)}
	start := clock.t.Truncate(time.Second)
	dev := &simRTC{clock: clock, value: start, at: start.Add(phase), divReset: divReset}
	hw := &RTC{Open: func() (RTCDevice, error) { return dev, nil }, State: state, Sleep: clock.Sleep,
		Now: func() time.Time { return clock.t.Add(*skew) }}
	return clock, dev, hw
}

// The reason for RTC: whatever the phase of the hardware clock after a
// write, the next boot comes up within milliseconds of true time, where
// the kernel's read (second + 0.5 s) is up to a second off.
func TestRTCKeepsTimeAcrossRebootToMilliseconds(t *testing.T) {
	for _, divReset := range []bool{false, true} {
		for _, phase := range []time.Duration{0, 130 * time.Millisecond, 499 * time.Millisecond, 501 * time.Millisecond, 870 * time.Millisecond} {
			state := filepath.Join(t.TempDir(), "rtc.json")
			var skew time.Duration // NTP just made the system clock right
			clock, dev, hw := newSim(phase, divReset, state, &skew)
			w, err := hw.Save()
			if err != nil {
				t.Fatal(err)
			}
			if divReset && (w.Offset > 5*time.Millisecond || w.Offset < -5*time.Millisecond) {
				t.Errorf("divider reset, phase %v: offset after the write %v, want about 0", phase, w.Offset)
			}

			// Power off for a while; the kernel boots and reads the
			// second with half a second added.
			clock.Sleep(3*time.Hour + 345*time.Millisecond)
			sec, _ := dev.Get()
			skew = sec.Add(500 * time.Millisecond).Sub(clock.t)
			kernelErr := skew

			again := &RTC{Open: hw.Open, State: state, Sleep: clock.Sleep, Now: hw.Now}
			d, last, err := again.Read()
			if err != nil {
				t.Fatal(err)
			}
			if last.Offset != w.Offset {
				t.Errorf("the offset kept is %v, the write measured %v", last.Offset, w.Offset)
			}
			skew += d
			if skew > 3*time.Millisecond || skew < -3*time.Millisecond {
				t.Errorf("divider reset %v, phase %v: after the boot read the clock is %v off (the kernel's read was %v off)", divReset, phase, skew, kernelErr)
			}
		}
	}
}

func TestRTCWithoutKeptOffsetStillReadsToTheTick(t *testing.T) {
	var skew time.Duration
	_, _, hw := newSim(0, true, filepath.Join(t.TempDir(), "rtc.json"), &skew)
	skew = 700 * time.Millisecond
	d, last, err := hw.Read()
	if err != nil || !last.At.IsZero() {
		t.Fatalf("Read with no offset kept: %v %+v", err, last)
	}
	if got := skew + d; got > 3*time.Millisecond || got < -3*time.Millisecond {
		t.Errorf("after the read the clock is %v off", got)
	}
}

// On a busy box the reads can be far apart; a tick between two reads
// 300 ms apart would be placed up to 150 ms off, so it waits for a tick
// it can place.
func TestRTCWaitsForATickItCanPlace(t *testing.T) {
	var skew time.Duration
	clock, _, hw := newSim(250*time.Millisecond, false, "", &skew)
	busyUntil := clock.t.Add(2500 * time.Millisecond)
	hw.Sleep = func(d time.Duration) {
		if clock.t.Before(busyUntil) {
			d += 300 * time.Millisecond
		}
		clock.Sleep(d)
	}
	if _, err := hw.Save(); err != nil {
		t.Fatal(err)
	}
	skew = -400 * time.Millisecond
	d, _, err := hw.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := skew + d; got > 3*time.Millisecond || got < -3*time.Millisecond {
		t.Errorf("after the read the clock is %v off", got)
	}

	hw.Sleep = func(d time.Duration) { clock.Sleep(d + 300*time.Millisecond) }
	if _, _, err := hw.Read(); err == nil || !strings.Contains(err.Error(), "never closer") {
		t.Errorf("a box too busy to place any tick: %v", err)
	}
}

func TestRTCDamagedOffsetIsSaidAndIgnored(t *testing.T) {
	state := filepath.Join(t.TempDir(), "rtc.json")
	os.WriteFile(state, []byte(`{"offset_ns": 9000000000}`), 0o644)
	var skew time.Duration
	_, _, hw := newSim(0, true, state, &skew)
	_, _, err := hw.Read()
	if !errors.Is(err, ErrRTCOffsetLost) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Read with a damaged offset file: %v", err)
	}
}

func TestRTCStoppedIsAnError(t *testing.T) {
	var skew time.Duration
	clock, dev, hw := newSim(0, true, "", &skew)
	dev.stopped = true
	start := clock.t
	_, _, err := hw.Read()
	if !errors.Is(err, ErrRTCStopped) {
		t.Fatalf("Read of a stopped RTC: %v", err)
	}
	if waited := clock.t.Sub(start); waited > 3*time.Second {
		t.Errorf("gave up after %v", waited)
	}
}

// fakeHardware records what the service asks of the hardware clock.
type fakeHardware struct {
	step  time.Duration
	err   error
	saves int
}

func (h *fakeHardware) Save() (RTCWrite, error) {
	h.saves++
	return RTCWrite{Offset: 42 * time.Millisecond, At: time.Now()}, nil
}

func (h *fakeHardware) Read() (time.Duration, RTCWrite, error) {
	return h.step, RTCWrite{Offset: 7 * time.Millisecond, At: time.Now().Add(-time.Hour)}, h.err
}

func TestServiceSetsClockFromHardwareAtBootOnce(t *testing.T) {
	clock := &fakeClock{}
	hw := &fakeHardware{step: -640 * time.Millisecond}
	s := New(clock, func(context.Context, string, func() time.Time) (Sample, error) {
		return Sample{Server: "a", Offset: 20 * time.Millisecond, RTT: time.Millisecond}, nil
	}, nil)
	s.Hardware = hw
	if err := s.SetFromHardwareClock(); err != nil {
		t.Fatal(err)
	}
	st := s.Status()
	if len(clock.steps) != 1 || clock.steps[0] != hw.step {
		t.Fatalf("steps %v, want the hardware clock's %v", clock.steps, hw.step)
	}
	if st.RTC == nil || st.RTC.Read.IsZero() || st.RTC.BootStepMS != -640 || st.RTC.OffsetMS != 7 || st.Synchronized {
		t.Fatalf("status after the boot read: %+v %+v", st, st.RTC)
	}
	// The first NTP correction is still a step, however small, and it
	// writes the hardware clock.
	s.SetServers([]string{"a"})
	if _, err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(clock.steps) != 2 || hw.saves != 1 {
		t.Fatalf("after the first sync: steps %v, hardware writes %d", clock.steps, hw.saves)
	}
	if st := s.Status(); st.RTC.OffsetMS != 42 || st.RTC.Written.IsZero() {
		t.Fatalf("status after the write: %+v", st.RTC)
	}
	// A restarted Run must not put the clock back on the hardware clock.
	if err := s.SetFromHardwareClock(); err != nil || len(clock.steps) != 2 {
		t.Fatalf("second boot read: %v, steps %v", err, clock.steps)
	}
	// A slew soon after does not write the hardware clock again.
	if _, err := s.Sync(context.Background()); err != nil || hw.saves != 1 {
		t.Fatalf("slew: %v, hardware writes %d", err, hw.saves)
	}
}

func TestServiceRefusesLargeHardwareStep(t *testing.T) {
	clock := &fakeClock{}
	s := New(clock, nil, nil)
	s.Hardware = &fakeHardware{step: 40 * time.Second}
	err := s.SetFromHardwareClock()
	if err == nil || len(clock.steps) != 0 || !strings.Contains(s.Status().RTC.Error, "left alone") {
		t.Fatalf("a 40 s step from the hardware clock: %v, steps %v, status %+v", err, clock.steps, s.Status().RTC)
	}
}

func TestServiceStepsWithLostOffsetAndSaysSo(t *testing.T) {
	clock := &fakeClock{}
	s := New(clock, nil, nil)
	s.Hardware = &fakeHardware{step: 300 * time.Millisecond, err: ErrRTCOffsetLost}
	if err := s.SetFromHardwareClock(); !errors.Is(err, ErrRTCOffsetLost) || len(clock.steps) != 1 {
		t.Fatalf("lost offset: %v, steps %v", err, clock.steps)
	}
	if st := s.Status().RTC; st.Read.IsZero() || st.Error == "" {
		t.Fatalf("status: %+v", st)
	}
}
