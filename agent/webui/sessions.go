package webui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"sync"
	"time"
)

// Session timeouts (OWASP ASVS 5.0 level 2, 7.3): idle, and absolute from
// the login.
const (
	DefaultIdle     = 15 * time.Minute
	DefaultAbsolute = 12 * time.Hour
)

// Session is one browser's login. Its ID is the cookie; Token guards its
// forms against forgery. Neither is ever logged.
type Session struct {
	ID      string
	Token   string
	User    string
	Created time.Time
	Last    time.Time
}

// Sessions is the server-side session store, in memory: a reboot ends
// every session, which an appliance's operator expects. Fill in the
// fields before use; zero values get the defaults.
type Sessions struct {
	Idle, Absolute time.Duration
	Now            func() time.Time
	// Max bounds the sessions held; at the bound the least recently used
	// goes first, so a flood of logins cannot grow memory.
	Max int

	mu sync.Mutex
	m  map[string]*Session
}

// DefaultMaxSessions is Sessions.Max when zero.
const DefaultMaxSessions = 256

func (s *Sessions) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

func (s *Sessions) limits() (idle, absolute time.Duration, max int) {
	idle, absolute, max = s.Idle, s.Absolute, s.Max
	if idle <= 0 {
		idle = DefaultIdle
	}
	if absolute <= 0 {
		absolute = DefaultAbsolute
	}
	if max <= 0 {
		max = DefaultMaxSessions
	}
	return
}

// random is 128 bits from the system's generator, in hex.
func random() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b[:])
}

// New starts a session for user with a new ID: a login never keeps an ID
// the browser had before (session fixation).
func (s *Sessions) New(user string) *Session {
	now := s.now()
	ses := &Session{ID: random(), Token: random(), User: user, Created: now, Last: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]*Session{}
	}
	_, _, max := s.limits()
	s.expireLocked(now)
	for len(s.m) >= max {
		var oldest *Session
		for _, o := range s.m {
			if oldest == nil || o.Last.Before(oldest.Last) {
				oldest = o
			}
		}
		delete(s.m, oldest.ID)
	}
	s.m[ses.ID] = ses
	c := *ses
	return &c
}

// Get returns the session with id and marks it used, or false when there
// is none or it has expired (idle or absolute); an expired one is ended.
func (s *Sessions) Get(id string) (Session, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ses, ok := s.m[id]
	if !ok {
		return Session{}, false
	}
	if s.expired(ses, now) {
		delete(s.m, id)
		return Session{}, false
	}
	ses.Last = now
	return *ses, true
}

func (s *Sessions) expired(ses *Session, now time.Time) bool {
	idle, absolute, _ := s.limits()
	return now.Sub(ses.Last) >= idle || now.Sub(ses.Created) >= absolute
}

func (s *Sessions) expireLocked(now time.Time) {
	for id, ses := range s.m {
		if s.expired(ses, now) {
			delete(s.m, id)
		}
	}
}

// End ends one session (logout).
func (s *Sessions) End(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// EndUser ends every session of user: after a password change, or when
// the user is disabled or deleted.
func (s *Sessions) EndUser(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, ses := range s.m {
		if ses.User == user {
			delete(s.m, id)
		}
	}
}

// ValidToken compares a form's token with the session's in constant time.
func (ses Session) ValidToken(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(ses.Token)) == 1
}

// SetTimeouts changes the idle and absolute timeouts (the account
// policy's); sessions already open are held to the new ones.
func (s *Sessions) SetTimeouts(idle, absolute time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Idle, s.Absolute = idle, absolute
}
