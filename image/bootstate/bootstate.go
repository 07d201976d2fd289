// Package bootstate is the boot state shared by GRUB and the agent: which base
// slots are bootable, committed, how many trial boots each has left, which is
// the default and which was last good. It is stored as a GRUB environment
// block (exactly 1024 bytes, so GRUB's save_env can rewrite it in place) in
// two copies on the ESP. A copy is valid only if it carries the end marker,
// so a torn or corrupted copy is recognised by GRUB and the agent alike.
package bootstate

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"keel.dev/keel/image/layout"
)

// Paths of the two copies inside the ESP. GRUB reads the primary first.
const (
	PrimaryPath = "EFI/keel/bootenv"
	BackupPath  = "EFI/keel/bootenv.bak"
)

// BlockSize is the size of a GRUB environment block.
const BlockSize = 1024

// DefaultTries is how many trial boots a freshly written slot gets.
const DefaultTries = 3

// MaxTries bounds the tries GRUB can count down (its script has no
// arithmetic, so the decrement is a generated table).
const MaxTries = 9

const (
	header = "# GRUB Environment Block\n"
	magic  = "keel1"
)

// Slot is the state of one base slot.
type Slot struct {
	Bootable bool   // false: never boot it (being written, or marked bad)
	Good     bool   // committed: booted and passed its health checks
	Tries    int    // trial boots left while not Good
	Version  string // shown in the GRUB menu
	// Floor is the anti-rollback floor the slot's signed base manifest
	// asks for; it becomes the box's when the slot is committed.
	Floor string
}

// Bootable reports whether GRUB may boot the slot now.
func (s Slot) CanBoot() bool { return s.Bootable && (s.Good || s.Tries > 0) }

// State is the whole boot state.
type State struct {
	Gen      uint64       // increases with every write by the agent
	Default  layout.Label // tried first
	LastGood layout.Label // booted in recovery mode when nothing is bootable
	// Floor is the oldest base version the box may run or install: it
	// only goes up, as committed bases ask. It lives here, beside the
	// slots, so a factory reset of the data partition cannot lower it.
	Floor string
	A, B  Slot
}

// Slot returns a pointer to the named slot's state.
func (s *State) Slot(name layout.Label) *Slot {
	if name == layout.SlotB {
		return &s.B
	}
	return &s.A
}

// Validate checks the invariants GRUB relies on.
func (s *State) Validate() error {
	for _, v := range []struct {
		what string
		val  layout.Label
	}{{"default", s.Default}, {"last good", s.LastGood}} {
		if !v.val.Valid() {
			return fmt.Errorf("boot state: %s slot %q is not a or b", v.what, v.val)
		}
	}
	for _, n := range layout.Labels {
		sl := s.Slot(n)
		if sl.Tries < 0 || sl.Tries > MaxTries {
			return fmt.Errorf("boot state: slot %s tries %d out of range 0..%d", n, sl.Tries, MaxTries)
		}
		if strings.ContainsAny(sl.Version, "\n\\\"'$ ") {
			return fmt.Errorf("boot state: slot %s version %q has characters GRUB cannot show", n, sl.Version)
		}
		if strings.ContainsAny(sl.Floor, "\n\\\"'$ #=") {
			return fmt.Errorf("boot state: slot %s floor %q has characters the environment block cannot hold", n, sl.Floor)
		}
	}
	if strings.ContainsAny(s.Floor, "\n\\\"'$ #=") {
		return fmt.Errorf("boot state: floor %q has characters the environment block cannot hold", s.Floor)
	}
	return nil
}

// Encode renders the state as a 1024-byte GRUB environment block. The end
// marker comes last so a copy cut short is invalid.
func (s *State) Encode() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(header)
	kv := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	kv("keel_gen", strconv.FormatUint(s.Gen, 10))
	kv("keel_default", string(s.Default))
	kv("keel_last_good", string(s.LastGood))
	if s.Floor != "" {
		kv("keel_floor", s.Floor)
	}
	for _, n := range layout.Labels {
		sl := s.Slot(n)
		p := "keel_" + string(n)
		kv(p+"_ok", bit(sl.Bootable))
		kv(p+"_good", bit(sl.Good))
		kv(p+"_tries", strconv.Itoa(sl.Tries))
		kv(p+"_ver", sl.Version)
		if sl.Floor != "" {
			kv(p+"_floor", sl.Floor)
		}
	}
	kv("keel_magic", magic)
	if b.Len() > BlockSize {
		return nil, errors.New("boot state: does not fit in an environment block")
	}
	b.Write(bytes.Repeat([]byte{'#'}, BlockSize-b.Len()))
	return b.Bytes(), nil
}

// ErrInvalid says a copy is torn, corrupted or missing its marker.
var ErrInvalid = errors.New("boot state copy is invalid")

// Decode parses a block written by Encode or rewritten by GRUB's save_env.
func Decode(block []byte) (*State, error) {
	if len(block) != BlockSize || !bytes.HasPrefix(block, []byte(header)) {
		return nil, ErrInvalid
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(block[len(header):]), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, ErrInvalid
		}
		vars[k] = v
	}
	if vars["keel_magic"] != magic {
		return nil, ErrInvalid
	}
	s := &State{Default: layout.Label(vars["keel_default"]), LastGood: layout.Label(vars["keel_last_good"]), Floor: vars["keel_floor"]}
	var err error
	if s.Gen, err = strconv.ParseUint(vars["keel_gen"], 10, 64); err != nil {
		return nil, fmt.Errorf("%w: keel_gen: %v", ErrInvalid, err)
	}
	for _, n := range layout.Labels {
		sl := s.Slot(n)
		p := "keel_" + string(n)
		sl.Bootable = vars[p+"_ok"] == "1"
		sl.Good = vars[p+"_good"] == "1"
		sl.Version = vars[p+"_ver"]
		sl.Floor = vars[p+"_floor"]
		if sl.Tries, err = strconv.Atoi(vars[p+"_tries"]); err != nil {
			return nil, fmt.Errorf("%w: keel_%s_tries: %v", ErrInvalid, n, err)
		}
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return s, nil
}

// Pick chooses between the two copies as GRUB does: the primary when it is
// valid, else the backup. It reports which copy it used.
func Pick(primary, backup []byte) (*State, string, error) {
	if s, err := Decode(primary); err == nil {
		return s, "primary", nil
	}
	if s, err := Decode(backup); err == nil {
		return s, "backup", nil
	}
	return nil, "", errors.New("both copies of the boot state are invalid")
}

// Decision is what GRUB does with a state: boot Slot, in recovery mode or
// not, taking one try when Trial.
type Decision struct {
	Slot     layout.Label
	Trial    bool
	Recovery bool
}

// Decide is the slot state machine that grub.cfg implements; the agent and
// the tests use it to know what GRUB will do. It returns the state after
// GRUB's own write (one try taken from a trial slot).
func Decide(s State) (Decision, State) {
	for _, n := range []layout.Label{s.Default, s.Default.Other()} {
		sl := s.Slot(n)
		if !sl.CanBoot() {
			continue
		}
		if sl.Good {
			return Decision{Slot: n}, s
		}
		sl.Tries--
		return Decision{Slot: n, Trial: true}, s
	}
	return Decision{Slot: s.LastGood, Recovery: true}, s
}

// Initial is the state of a freshly built image: slot a committed with
// version, slot b holding other (empty when not filled).
func Initial(version, other string) State {
	return State{
		Gen: 1, Default: layout.SlotA, LastGood: layout.SlotA,
		A: Slot{Bootable: true, Good: true, Version: version},
		B: Slot{Bootable: other != "", Good: other != "", Version: other},
	}
}

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}
