// Package access owns the allowed networks of the admin interface (the
// JSON API and the web interface): lists of networks to accept and to
// reject, the most specific match deciding, and a default for addresses
// in neither. The serial console's recovery menu can always reset them
// (Reset), so nobody locks themselves out for good; and a change that
// would shut out the address it came from is refused.
//
// # HTTP
//
//	GET /api/v1/access   200 {"default": "accept"|"reject", "accept": [CIDR], "reject": [CIDR]}
//	PUT /api/v1/access   the same object → 200 the same, as saved
package access

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"sync"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/atomicfile"
)

// Action is what happens to a client.
type Action string

// The actions.
const (
	Accept Action = "accept"
	Reject Action = "reject"
)

// Rules are the allowed networks.
type Rules struct {
	Default Action   `json:"default"`
	Accept  []string `json:"accept"`
	Reject  []string `json:"reject"`
}

// Open is the rules of a new box: everyone may try to log in.
func Open() Rules { return Rules{Default: Accept, Accept: []string{}, Reject: []string{}} }

// compiled is Rules parsed.
type compiled struct {
	def            Action
	accept, reject []netip.Prefix
}

func (r Rules) compile() (compiled, error) {
	c := compiled{def: r.Default}
	if c.def == "" {
		c.def = Accept
	}
	if c.def != Accept && c.def != Reject {
		return c, api.FieldError{Field: "default", Problem: "use accept or reject"}
	}
	for _, l := range []struct {
		field string
		in    []string
		out   *[]netip.Prefix
	}{{"accept", r.Accept, &c.accept}, {"reject", r.Reject, &c.reject}} {
		for _, s := range l.in {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return c, api.FieldError{Field: l.field, Problem: fmt.Sprintf("%q is not a network (CIDR such as 192.0.2.0/24) or an address", s)}
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			*l.out = append(*l.out, p.Masked())
		}
	}
	return c, nil
}

// decide: the longest prefix containing addr wins; at equal length,
// reject wins; in neither list, the default.
func (c compiled) decide(addr netip.Addr) Action {
	addr = addr.Unmap()
	best, action := -1, c.def
	for _, l := range []struct {
		ps []netip.Prefix
		a  Action
	}{{c.accept, Accept}, {c.reject, Reject}} {
		for _, p := range l.ps {
			if p.Contains(addr) && (p.Bits() > best || p.Bits() == best && l.a == Reject) {
				best, action = p.Bits(), l.a
			}
		}
	}
	return action
}

// Store keeps the rules in a file (empty Path: in memory).
type Store struct {
	Path string

	mu    sync.Mutex
	rules Rules
	c     compiled
}

// Load reads the rules; a missing file is Open().
func (s *Store) Load() error {
	r := Open()
	if s.Path != "" {
		data, err := os.ReadFile(s.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("access: read %s: %w", s.Path, err)
		default:
			if err := json.Unmarshal(data, &r); err != nil {
				return fmt.Errorf("access: %s is damaged (%v); reset the allowed networks on the serial console", s.Path, err)
			}
		}
	}
	c, err := r.compile()
	if err != nil {
		return fmt.Errorf("access: %s: %w; reset the allowed networks on the serial console", s.Path, err)
	}
	s.mu.Lock()
	s.rules, s.c = r, c
	s.mu.Unlock()
	return nil
}

// Allowed says whether addr may use the admin interface.
func (s *Store) Allowed(addr netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.decide(addr) != Reject // unloaded rules (zero) accept
}

// Rules returns the rules in force.
func (s *Store) Rules() Rules {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rules
	r.Accept, r.Reject = append([]string{}, r.Accept...), append([]string{}, r.Reject...)
	return r
}

// Set saves new rules; from, when valid, is the client asking, which the
// new rules must still accept.
func (s *Store) Set(r Rules, from netip.Addr) error {
	if r.Default == "" {
		r.Default = Accept
	}
	if r.Accept == nil {
		r.Accept = []string{}
	}
	if r.Reject == nil {
		r.Reject = []string{}
	}
	c, err := r.compile()
	if err != nil {
		return err
	}
	if from.IsValid() && c.decide(from) != Accept {
		return api.FieldError{Field: "accept", Problem: fmt.Sprintf("these rules would shut out your own address %s; accept it (or a network holding it) first", from.Unmap())}
	}
	return s.save(r, c)
}

// Reset opens the admin interface to every address again: the recovery
// menu's way back in.
func (s *Store) Reset() error {
	r := Open()
	c, _ := r.compile()
	return s.save(r, c)
}

func (s *Store) save(r Rules, c compiled) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Path != "" {
		data, _ := json.MarshalIndent(r, "", "  ")
		if err := atomicfile.Write(s.Path, append(data, '\n'), 0o600); err != nil {
			return fmt.Errorf("access: save: %w", err)
		}
	}
	s.rules, s.c = r, c
	return nil
}

// Refusal is the sentence a refused client gets.
const Refusal = "your address is not among the networks allowed to manage this appliance; ask an administrator to add it on the Security page, or reset the allowed networks on the serial console"

// Routes registers GET and PUT /api/v1/access.
func (s *Store) Routes(mux api.Mux) {
	mux.Handle("GET /api/v1/access", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, s.Rules())
	}))
	mux.Handle("PUT /api/v1/access", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rules Rules
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&rules); err != nil {
			api.WriteError(w, http.StatusBadRequest, `send {"default": "accept" or "reject", "accept": ["CIDR", …], "reject": ["CIDR", …]} as JSON`)
			return
		}
		err := s.Set(rules, api.ClientAddr(r))
		var fe api.FieldError
		switch {
		case errors.As(err, &fe):
			api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: fe.Error(), Fields: []api.FieldError{fe}})
		case err != nil:
			api.WriteError(w, http.StatusInternalServerError, "the allowed networks could not be saved ("+err.Error()+"); try again")
		default:
			api.WriteJSON(w, http.StatusOK, s.Rules())
		}
	}))
}
