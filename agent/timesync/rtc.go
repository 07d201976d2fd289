package timesync

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/atomicfile"
)

// HardwareClock is the battery-backed clock the box boots from.
type HardwareClock interface {
	// Save sets the hardware clock from the system clock and measures how
	// far it ticks from it.
	Save() (RTCWrite, error)
	// Read returns the step that puts the system clock on the hardware
	// clock's time, corrected by what the last Save measured.
	Read() (time.Duration, RTCWrite, error)
}

// RTCWrite is what Save measured: the hardware clock minus the system clock
// just after the write, and when that was.
type RTCWrite struct {
	Offset time.Duration `json:"offset_ns"`
	At     time.Time     `json:"at"`
}

// RTCDevice reads and sets a hardware clock's whole seconds; it is open
// for one Save or Read, which reads it a thousand times a second.
type RTCDevice interface {
	Get() (time.Time, error)
	Set(time.Time) error
	Close() error
}

// RTC is a hardware clock that counts whole seconds, such as the PC's
// MC146818. Its second can tick anywhere within a second of the system
// clock's: the kernel reads it at boot as "second + 0.5 s", and on AMD
// chipsets (and QEMU's default CPU) setting it keeps the old sub-second
// phase rather than restarting it. So each write is followed by watching
// for the next tick, which says where the phase fell, and the offset is
// kept on the data partition. At boot, watching for a tick again and
// taking the offset off gives the time to a few milliseconds, where the
// kernel's own read is up to a second off.
type RTC struct {
	Open func() (RTCDevice, error)
	// State is the file that keeps the last write's offset across
	// reboots; "" keeps it in memory only.
	State string
	Now   func() time.Time    // the system clock
	Sleep func(time.Duration) // between two reads while watching for a tick

	last RTCWrite // when State is ""
}

// NewRTC is the hardware clock at dev (e.g. /dev/rtc0), its offset kept in
// state.
func NewRTC(dev, state string) *RTC {
	open := func() (RTCDevice, error) {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		return rtcFile{f}, nil
	}
	return &RTC{Open: open, State: state, Now: time.Now, Sleep: time.Sleep}
}

const (
	// rtcPoll is how often the seconds are read while watching for a tick:
	// the tick is placed to within this.
	rtcPoll = time.Millisecond
	// rtcTickWait bounds the watch: a running RTC ticks within a second.
	rtcTickWait = 2 * time.Second
	// rtcBracket is the widest gap between two reads around a tick that
	// still places it well, and rtcMaxMissed how many ticks may go by
	// with wider gaps.
	rtcBracket   = 10 * time.Millisecond
	rtcMaxMissed = 10
)

// ErrRTCOffsetLost says Read's step is good only to within a second: the
// offset the last write measured could not be read.
var ErrRTCOffsetLost = errors.New("the hardware clock's measured offset is lost")

// ErrRTCStopped says the hardware clock did not tick while watched.
var ErrRTCStopped = errors.New("the hardware clock did not tick within 2 s; its battery or oscillator may have failed")

func (r *RTC) Save() (RTCWrite, error) {
	dev, err := r.Open()
	if err != nil {
		return RTCWrite{}, fmt.Errorf("write hardware clock: %w", err)
	}
	defer dev.Close()
	// A clock that restarts its divider on a write (an MC146818 on most
	// Intel chipsets) ticks first 500 ms later: set second N at N+0.5 s so
	// that it ticks N+1 at N+1, which keeps the offset near zero even when
	// the saved offset is lost with the data partition.
	next := r.Now().Add(-500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	r.Sleep(next.Add(500 * time.Millisecond).Sub(r.Now()))
	if err := dev.Set(next); err != nil {
		return RTCWrite{}, fmt.Errorf("write hardware clock: %w", err)
	}
	at, val, err := r.waitTick(dev)
	if err != nil {
		return RTCWrite{}, fmt.Errorf("check the hardware clock after writing it: %w", err)
	}
	w := RTCWrite{Offset: val.Sub(at), At: at.UTC().Round(0)}
	if err := r.store(w); err != nil {
		return w, err
	}
	return w, nil
}

func (r *RTC) Read() (time.Duration, RTCWrite, error) {
	// Without the offset the tick still gives the time to within the
	// phase of the last write, which beats the kernel's read: go on, and
	// say it with ErrRTCOffsetLost.
	last, lerr := r.load()
	dev, err := r.Open()
	if err != nil {
		return 0, last, fmt.Errorf("read hardware clock: %w", err)
	}
	defer dev.Close()
	at, val, err := r.waitTick(dev)
	if err != nil {
		return 0, last, fmt.Errorf("read hardware clock: %w", err)
	}
	return val.Add(-last.Offset).Sub(at), last, lerr
}

// waitTick watches the seconds until they change and returns the system
// clock's time at the change and the hardware clock's new second. A tick
// counts only when two reads less than rtcBracket apart enclose it: a
// busy box (a boot under emulation) can leave hundreds of milliseconds
// between two reads, and then the next tick is watched instead.
func (r *RTC) waitTick(dev RTCDevice) (time.Time, time.Time, error) {
	last, err := dev.Get()
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	prev := r.Now()
	deadline := prev.Add(rtcTickWait)
	missed := 0
	for {
		r.Sleep(rtcPoll)
		v, err := dev.Get()
		now := r.Now()
		if err != nil {
			return time.Time{}, time.Time{}, err
		}
		if !v.Equal(last) {
			if now.Sub(prev) <= rtcBracket {
				return prev.Add(now.Sub(prev) / 2), v, nil
			}
			last, deadline = v, now.Add(rtcTickWait)
			if missed++; missed >= rtcMaxMissed {
				return time.Time{}, time.Time{}, fmt.Errorf("the reads of the hardware clock were never closer than %v around a tick in %d tries", rtcBracket, rtcMaxMissed)
			}
		}
		if now.After(deadline) {
			return time.Time{}, time.Time{}, ErrRTCStopped
		}
		prev = now
	}
}

func (r *RTC) store(w RTCWrite) error {
	if r.State == "" {
		r.last = w
		return nil
	}
	b, _ := json.Marshal(w)
	if err := atomicfile.Write(r.State, b, 0o644); err != nil {
		return fmt.Errorf("keep the hardware clock's offset: %w", err)
	}
	return nil
}

func (r *RTC) load() (RTCWrite, error) {
	if r.State == "" {
		return r.last, nil
	}
	b, err := os.ReadFile(r.State)
	if errors.Is(err, os.ErrNotExist) {
		return RTCWrite{}, nil // never written by this box
	}
	if err != nil {
		return RTCWrite{}, fmt.Errorf("%w: %v; it is measured again at the next NTP step", ErrRTCOffsetLost, err)
	}
	var w RTCWrite
	if err := json.Unmarshal(b, &w); err != nil || w.Offset <= -time.Second || w.Offset >= time.Second {
		return RTCWrite{}, fmt.Errorf("%w: %s is damaged; it is measured again at the next NTP step", ErrRTCOffsetLost, r.State)
	}
	return w, nil
}

// rtcFile is a Linux RTC character device, open; it keeps UTC.
type rtcFile struct{ f *os.File }

func (d rtcFile) Get() (time.Time, error) {
	rt, err := unix.IoctlGetRTCTime(int(d.f.Fd()))
	if err != nil {
		return time.Time{}, fmt.Errorf("read %s: %w", d.f.Name(), err)
	}
	return time.Date(int(rt.Year)+1900, time.Month(rt.Mon+1), int(rt.Mday),
		int(rt.Hour), int(rt.Min), int(rt.Sec), 0, time.UTC), nil
}

func (d rtcFile) Set(t time.Time) error {
	t = t.UTC()
	rt := unix.RTCTime{Sec: int32(t.Second()), Min: int32(t.Minute()), Hour: int32(t.Hour()),
		Mday: int32(t.Day()), Mon: int32(t.Month()) - 1, Year: int32(t.Year()) - 1900}
	if err := unix.IoctlSetRTCTime(int(d.f.Fd()), &rt); err != nil {
		return fmt.Errorf("set %s: %w", d.f.Name(), err)
	}
	return nil
}

func (d rtcFile) Close() error { return d.f.Close() }
