package api

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// maxLockRecords bounds the lockout's memory: names and addresses are the
// attacker's to choose.
const maxLockRecords = 4096

// lockouts counts consecutive failed logins per account and per address
// (OWASP ASVS 5.0 6.3.1): at the threshold, logins of that account, or
// from that address, are refused without checking the password until the
// lockout has passed. Unknown names are counted as known ones are, so a
// lockout tells nothing about which accounts exist. The limiter's delays
// still apply below the threshold.
//
// An account's lockout does not hold against an address the account
// logged in from before (in this run of the agent): a flood of guesses
// from elsewhere cannot lock the operator out of their own workstation.
type lockouts struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*lockRecord
	// trusted is "user|address" that logged in, with when.
	trusted map[string]time.Time
}

type lockRecord struct {
	failures int
	last     time.Time
}

func newLockouts(now func() time.Time) *lockouts {
	return &lockouts{now: now, m: map[string]*lockRecord{}, trusted: map[string]time.Time{}}
}

// left is how much longer key is locked out, or 0.
func (l *lockouts) left(key string, threshold int, d time.Duration) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.m[key]
	if !ok || r.failures < threshold {
		return 0
	}
	if left := d - l.now().Sub(r.last); left > 0 {
		return left
	}
	delete(l.m, key) // served its time: starts afresh
	return 0
}

// failed counts a failure of key; failures further apart than d do not
// add up.
func (l *lockouts) failed(key string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	r, ok := l.m[key]
	if !ok {
		if len(l.m) >= maxLockRecords {
			l.dropOldestLocked()
		}
		r = &lockRecord{}
		l.m[key] = r
	}
	if now.Sub(r.last) > d {
		r.failures = 0
	}
	r.failures++
	r.last = now
}

func (l *lockouts) dropOldestLocked() {
	var oldest string
	var at time.Time
	for k, r := range l.m {
		if oldest == "" || r.last.Before(at) {
			oldest, at = k, r.last
		}
	}
	delete(l.m, oldest)
}

func (l *lockouts) succeeded(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, key)
}

// trust remembers that user logged in from addr.
func (l *lockouts) trust(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.trusted) >= maxLockRecords {
		var oldest string
		var at time.Time
		for k, t := range l.trusted {
			if oldest == "" || t.Before(at) {
				oldest, at = k, t
			}
		}
		delete(l.trusted, oldest)
	}
	l.trusted[user+"|"+addr] = l.now()
}

func (l *lockouts) isTrusted(user, addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.trusted[user+"|"+addr]
	return ok
}

// lockedOut is CheckLogin's answer to a locked account or address.
func lockedOut(what string, left time.Duration) Login {
	mins := int((left + time.Minute - 1) / time.Minute)
	return Login{
		Code:       http.StatusTooManyRequests,
		RetryAfter: strconv.Itoa(int((left + time.Second - 1) / time.Second)),
		Message:    fmt.Sprintf("%s is locked for another %d minute(s) after too many failed logins; wait, or have the password reset (by another administrator on the Users page, or on the serial console)", what, mins),
		Locked:     true,
	}
}
