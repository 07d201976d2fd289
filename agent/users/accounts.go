package users

import (
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"
)

var (
	// ErrUnknownUser: no account has that name.
	ErrUnknownUser = errors.New("there is no such user; check the name on the Users page")
	// ErrUserExists: Add with a name in use.
	ErrUserExists = errors.New("a user of that name exists already; choose another name, or reset that user's password")
	// ErrInvalidName: a name with characters the console or Basic auth cannot carry.
	ErrInvalidName = errors.New("the user name is invalid: use 1 to 64 letters, digits, '.', '_' or '-'")
	// ErrLastAdmin: the change would leave no enabled account, or take the
	// acting user's own (nobody could log in afterwards, or they would
	// lock themselves out mid-session).
	ErrLastAdmin = errors.New("the change would leave nobody able to log in")
	// ErrSelf: disabling or deleting the account one is logged in as.
	ErrSelf = errors.New("you cannot disable or delete the account you are logged in as; log in as another administrator to do it")
	// ErrRecoveryAccount: deleting admin, the account the recovery menu resets.
	ErrRecoveryAccount = errors.New("the admin account cannot be deleted: the serial console's recovery menu resets its password; disable it instead")
)

// Account is one account as the Users page and GET /api/v1/users show it.
type Account struct {
	Name       string `json:"name"`
	Disabled   bool   `json:"disabled"`
	MustChange bool   `json:"must_change"` // the next login must choose a new password
}

// List returns the accounts sorted by name.
func (s *Store) List() []Account {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Account, 0, len(s.users))
	for n, u := range s.users {
		out = append(out, Account{Name: n, Disabled: u.disabled, MustChange: u.mustChange})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Add makes an account with a password its user must change at first
// login: the administrator who chose it knows it.
func (s *Store) Add(name, password string) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if !validName(name) {
		return ErrInvalidName
	}
	if err := s.validate(password); err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.RLock()
	_, exists := s.users[name]
	s.mu.RUnlock()
	if exists {
		return ErrUserExists
	}
	return s.setLocked(name, password, true)
}

// SetDisabled disables or enables name's account on by's request. A
// disabled account's password no longer logs in; the caller ends its
// sessions.
func (s *Store) SetDisabled(name string, disabled bool, by string) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if disabled && name == by {
		return ErrSelf
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.changeLocked(name, func(c *contents) error {
		u, ok := c.users[name]
		if !ok {
			return ErrUnknownUser
		}
		u.disabled = disabled
		c.users[name] = u
		return c.someoneCanLogIn()
	})
}

// Delete removes name's account on by's request.
func (s *Store) Delete(name, by string) error {
	if s.readOnly {
		return ErrReadOnly
	}
	switch {
	case name == Admin:
		return ErrRecoveryAccount
	case name == by:
		return ErrSelf
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.changeLocked(name, func(c *contents) error {
		if _, ok := c.users[name]; !ok {
			return ErrUnknownUser
		}
		delete(c.users, name)
		return c.someoneCanLogIn()
	})
}

func (c *contents) someoneCanLogIn() error {
	for _, u := range c.users {
		if !u.disabled {
			return nil
		}
	}
	return ErrLastAdmin
}

// Reset sets another account's password (an administrator's reset): the
// user must change it at next login. Unlike ResetPassword it does not
// make accounts.
func (s *Store) Reset(name, password string) error {
	s.mu.RLock()
	_, ok := s.users[name]
	s.mu.RUnlock()
	if !ok {
		return ErrUnknownUser
	}
	return s.ResetPassword(name, password, true)
}

// Policy is the account policy in force.
func (s *Store) Policy() Policy {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.policy
}

// SetPolicy saves p after checking it. A longer minimum applies to the
// next password chosen; passwords already set keep working.
func (s *Store) SetPolicy(p Policy) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if err := p.Validate(); err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.changeLocked("", func(c *contents) error {
		c.policy = p
		return nil
	})
}

// validate is ValidatePassword with the policy's minimum length.
func (s *Store) validate(password string) error {
	if err := ValidatePassword(password); err != nil {
		return err
	}
	if min := s.Policy().MinLength; utf8.RuneCountInString(password) < min {
		return fmt.Errorf("%w: use at least %d characters", ErrInvalidPassword, min)
	}
	return nil
}
