// Package timesync keeps the box's clock right with NTP: it queries
// several servers, believes the majority that agree, steps the clock when
// it is far off (always at boot) and slews it when it is close, and writes
// the hardware clock after a step. At boot, before any server answers, it
// sets the clock from the hardware clock to within milliseconds.
package timesync

import (
	"fmt"
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

// SystemClock is the kernel's realtime clock. The hardware clock is the
// Service's (see HardwareClock): a step leaves it alone.
type SystemClock struct{}

func (SystemClock) Now() time.Time { return time.Now() }

func (SystemClock) Step(d time.Duration) error {
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
