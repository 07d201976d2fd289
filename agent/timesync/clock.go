// Package timesync keeps the box's clock right with NTP: it queries
// several servers, believes the majority that agree, steps the clock when
// it is far off (always at boot) and slews it when it is close, and writes
// the hardware clock after a step.
package timesync

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Clock is the clock being disciplined. The agent uses SystemClock; tests
// use a clock of their own so the host's is never changed.
type Clock interface {
	Now() time.Time
	// Step jumps the clock by d at once.
	Step(d time.Duration) error
	// Slew makes the clock run slightly fast or slow until it has moved
	// by d, so time never jumps backwards for running programs.
	Slew(d time.Duration) error
}

// SystemClock is the kernel's realtime clock. After a step it writes the
// hardware clock (RTC), so the next boot starts from the right time.
type SystemClock struct {
	RTC string // e.g. /dev/rtc0; "" skips writing the hardware clock
}

func (SystemClock) Now() time.Time { return time.Now() }

func (c SystemClock) Step(d time.Duration) error {
	tx := unix.Timex{Modes: unix.ADJ_SETOFFSET | unix.ADJ_NANO}
	// With ADJ_NANO, Time.Usec holds nanoseconds; the kernel wants
	// 0 <= usec < 1e9, seconds carrying the sign.
	sec, nsec := int64(d/time.Second), int64(d%time.Second)
	if nsec < 0 {
		sec--
		nsec += int64(time.Second)
	}
	tx.Time.Sec, tx.Time.Usec = sec, nsec
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("step clock by %v: %w", d, err)
	}
	if c.RTC == "" {
		return nil
	}
	// The RTC holds whole seconds, and an MC146818 ticks its first second
	// 500 ms after it is set: set second N at N+0.5 s, as the kernel's own
	// NTP sync does, so that it ticks N+1 at N+1.
	next := time.Now().Add(-500 * time.Millisecond).Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(next.Add(500 * time.Millisecond)))
	if err := writeRTC(c.RTC, next); err != nil {
		return fmt.Errorf("clock stepped by %v but %w", d, err)
	}
	return nil
}

// maxSlew is the most the kernel's single-shot adjustment takes.
const maxSlew = 500 * time.Millisecond

func (SystemClock) Slew(d time.Duration) error {
	d = max(min(d, maxSlew), -maxSlew)
	tx := unix.Timex{Modes: unix.ADJ_OFFSET_SINGLESHOT, Offset: int64(d / time.Microsecond)}
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("slew clock by %v: %w", d, err)
	}
	return nil
}

func writeRTC(dev string, t time.Time) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("write hardware clock: %w", err)
	}
	defer f.Close()
	t = t.UTC()
	rt := unix.RTCTime{Sec: int32(t.Second()), Min: int32(t.Minute()), Hour: int32(t.Hour()),
		Mday: int32(t.Day()), Mon: int32(t.Month()) - 1, Year: int32(t.Year()) - 1900}
	if err := unix.IoctlSetRTCTime(int(f.Fd()), &rt); err != nil {
		return fmt.Errorf("write hardware clock %s: %w", dev, err)
	}
	return nil
}
