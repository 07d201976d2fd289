package users

import (
	"fmt"
	"time"
)

// Policy is the account rules an administrator sets on the Users page:
// the shortest password, the lockout after repeated failed logins (per
// account and per address), and how long a web session lasts.
type Policy struct {
	MinLength        int `json:"min_length"`        // characters, 8..64
	LockoutThreshold int `json:"lockout_threshold"` // consecutive failures before a lockout, 3..100
	LockoutMinutes   int `json:"lockout_minutes"`   // 1..1440
	// SessionIdleMinutes and SessionAbsoluteMinutes end a web session
	// after that long without a request, and after that long in all.
	SessionIdleMinutes     int `json:"session_idle_minutes"`     // 1..1440
	SessionAbsoluteMinutes int `json:"session_absolute_minutes"` // 5..10080, at least the idle time
}

// DefaultPolicy is OWASP ASVS 5.0 level 2's: 15 minutes idle, 12 hours
// in all.
var DefaultPolicy = Policy{
	MinLength:              MinPasswordLength,
	LockoutThreshold:       5,
	LockoutMinutes:         15,
	SessionIdleMinutes:     15,
	SessionAbsoluteMinutes: 12 * 60,
}

// Validate says which setting is out of range, as a sentence naming the
// field.
func (p Policy) Validate() error {
	for _, r := range []struct {
		field    string
		v, lo, h int
	}{
		{"min_length", p.MinLength, MinPasswordLength, 64},
		{"lockout_threshold", p.LockoutThreshold, 3, 100},
		{"lockout_minutes", p.LockoutMinutes, 1, 1440},
		{"session_idle_minutes", p.SessionIdleMinutes, 1, 1440},
		{"session_absolute_minutes", p.SessionAbsoluteMinutes, 5, 7 * 1440},
	} {
		if r.v < r.lo || r.v > r.h {
			return &PolicyError{Field: r.field, Problem: fmt.Sprintf("use a whole number from %d to %d", r.lo, r.h)}
		}
	}
	if p.SessionAbsoluteMinutes < p.SessionIdleMinutes {
		return &PolicyError{Field: "session_absolute_minutes", Problem: "use at least the idle timeout"}
	}
	return nil
}

// PolicyError names the setting at fault.
type PolicyError struct{ Field, Problem string }

func (e *PolicyError) Error() string { return e.Field + ": " + e.Problem }

// Lockout is the lockout's threshold and duration.
func (p Policy) Lockout() (int, time.Duration) {
	return p.LockoutThreshold, time.Duration(p.LockoutMinutes) * time.Minute
}

// Sessions is the web sessions' idle and absolute timeouts.
func (p Policy) Sessions() (idle, absolute time.Duration) {
	return time.Duration(p.SessionIdleMinutes) * time.Minute, time.Duration(p.SessionAbsoluteMinutes) * time.Minute
}
