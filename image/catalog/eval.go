package catalog

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"keel.dev/keel/image/kpkg"
)

// Box is an appliance as the catalog sees it: who it is and what it has
// installed. The appliance fills it in to check for updates; the update
// server fills it in from a download key.
type Box struct {
	Serial   string
	Channel  string
	Hardware string // hardware model; entries for other models are not offered
	// Installed is the version installed per kind; a missing kind has
	// nothing installed.
	Installed map[kpkg.Kind]kpkg.Version
	// Names is the installed package's name per kind, when known: only
	// entries of that name are offered for that kind.
	Names map[kpkg.Kind]string
	// LastInstall is the last install per kind, for waits.
	LastInstall map[kpkg.Kind]Installed
	Now         time.Time
}

// Installed records an install: which version, when, and the wait its
// manifest asked for before the next package of its kind.
type Installed struct {
	Version kpkg.Version
	At      time.Time
	Wait    time.Duration
}

// Update is an entry offered to a box, and whether it can install it now.
type Update struct {
	Entry
	Installable bool `json:"installable"`
	// Reason says why an update is not installable, as a sentence:
	// "requires base >= 1.1.0; installed 1.0.0".
	Reason string `json:"reason,omitempty"`
	// InstallableAt is when a wait ends, for an update held only by one.
	InstallableAt time.Time `json:"installable_at,omitzero"`
}

// Option changes how Updates evaluates.
type Option int

// IgnoreWait ignores waits, which is the operator's choice to make; it
// does not ignore requirements, hardware or targets.
const IgnoreWait Option = 1

// ErrNothingToInstall is what Plan wraps when it finds no step.
var ErrNothingToInstall = errors.New("nothing to install")

// Updates lists every entry offered to the box (its channel, its serial,
// its hardware, the name installed for the kind when known) that is newer
// than what the box has installed, bases first, then apps, each newest
// last, and says of each whether it installs now, or why not.
func (c *Catalog) Updates(b Box, opts ...Option) []Update {
	ignoreWait := slices.Contains(opts, IgnoreWait)
	var out []Update
	for _, e := range c.Entries {
		if !b.offered(e) || !b.older(e) {
			continue
		}
		u := Update{Entry: e}
		if err := checkAll(c.requirements(e), b.Installed); err != nil {
			u.Reason = err.Error()
		} else if at, why := b.waitUntil(e.Kind); !ignoreWait && why != "" {
			u.Reason, u.InstallableAt = why, at
		} else {
			u.Installable = true
		}
		out = append(out, u)
	}
	sort.SliceStable(out, func(i, j int) bool { return entryLess(&out[i].Entry, &out[j].Entry) })
	return out
}

// Plan is the order of installs that brings the box to the newest versions
// it can reach: bases first, each step the newest base whose requirements
// hold, then apps the same way, each step evaluated against the box as the
// steps before leave it; then bases again should an app have enabled one.
// Waits do not count: a plan is installed on purpose by an operator. A box
// with no step gets an error wrapping ErrNothingToInstall that says why.
func (c *Catalog) Plan(b Box) ([]Entry, error) {
	sim := b
	// Copies, not maps.Clone: the steps write to them, and a box may
	// have nil maps.
	sim.Installed = map[kpkg.Kind]kpkg.Version{}
	maps.Copy(sim.Installed, b.Installed)
	sim.Names = map[kpkg.Kind]string{}
	maps.Copy(sim.Names, b.Names)
	var plan []Entry
	for progress := true; progress; {
		progress = false
		for _, k := range []kpkg.Kind{kpkg.KindBase, kpkg.KindApp} {
			for {
				e, ok := c.nextStep(sim, k)
				if !ok {
					break
				}
				plan = append(plan, e)
				sim.Installed[k], sim.Names[k] = e.Version, e.Name
				progress = true
			}
		}
	}
	if len(plan) > 0 {
		return plan, nil
	}
	ups := c.Updates(b, IgnoreWait)
	if len(ups) == 0 {
		return nil, fmt.Errorf("%w: %s is up to date (%s)%s", ErrNothingToInstall, b.describe(), b.installedList(), b.targetNote())
	}
	return nil, fmt.Errorf("%w: %s %s", ErrNothingToInstall, ups[0].Entry, ups[0].Reason)
}

// nextStep is the newest entry of kind k the box can install now.
func (c *Catalog) nextStep(b Box, k kpkg.Kind) (Entry, bool) {
	var best *Entry
	for i := range c.Entries {
		e := &c.Entries[i]
		if e.Kind != k || !b.offered(*e) || !b.older(*e) || checkAll(c.requirements(*e), b.Installed) != nil {
			continue
		}
		if best == nil || e.Version.Compare(best.Version) > 0 {
			best = e
		}
	}
	if best == nil {
		return Entry{}, false
	}
	return *best, true
}

// requirements are the entry's own and the step it implies: the newest
// older version of its name that requires a version of its own kind.
func (c *Catalog) requirements(e Entry) []kpkg.Requirement {
	var step *Entry
	for i := range c.Entries {
		g := &c.Entries[i]
		if g.Kind != e.Kind || g.Name != e.Name || g.Version.Compare(e.Version) >= 0 || !isStep(g) {
			continue
		}
		if step == nil || g.Version.Compare(step.Version) > 0 {
			step = g
		}
	}
	if step == nil {
		return e.Requires
	}
	return append(slices.Clip(e.Requires), kpkg.Requirement{Kind: e.Kind, Op: kpkg.OpGE, Version: step.Version})
}

// isStep says whether an entry requires at least some version of its own
// kind, which makes it a migration later versions go through.
func isStep(e *Entry) bool {
	for _, r := range e.Requires {
		if r.Kind == e.Kind && (r.Op == kpkg.OpGE || r.Op == kpkg.OpGT) {
			return true
		}
	}
	return false
}

func checkAll(reqs []kpkg.Requirement, installed map[kpkg.Kind]kpkg.Version) error {
	for _, r := range reqs {
		if err := r.Check(installed); err != nil {
			return err
		}
	}
	return nil
}

// offered says whether the entry is meant for the box at all.
func (b Box) offered(e Entry) bool {
	if len(e.Channels) > 0 && !slices.Contains(e.Channels, b.Channel) {
		return false
	}
	if len(e.Serials) > 0 && !slices.Contains(e.Serials, b.Serial) {
		return false
	}
	if len(e.Hardware) > 0 && !slices.Contains(e.Hardware, b.Hardware) {
		return false
	}
	if name, ok := b.Names[e.Kind]; ok && name != "" && name != e.Name {
		return false
	}
	return true
}

// older says whether the box has an older version of the entry's kind, or
// none.
func (b Box) older(e Entry) bool {
	v, ok := b.Installed[e.Kind]
	return !ok || v.Compare(e.Version) < 0
}

// waitUntil says until when the last install of the kind holds the next
// one, and why, or "" when it does not.
func (b Box) waitUntil(k kpkg.Kind) (time.Time, string) {
	last, ok := b.LastInstall[k]
	if !ok || last.Wait <= 0 {
		return time.Time{}, ""
	}
	at := last.At.Add(last.Wait)
	if !b.Now.Before(at) {
		return time.Time{}, ""
	}
	return at, fmt.Sprintf("waits %v after %s %s (installed %s); installable at %s",
		last.Wait, k, last.Version, formatTime(last.At), formatTime(at))
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

func (b Box) describe() string {
	if b.Serial == "" {
		return "the appliance"
	}
	return "appliance " + b.Serial
}

func (b Box) installedList() string {
	var l []string
	for _, k := range []kpkg.Kind{kpkg.KindBase, kpkg.KindApp} {
		if v, ok := b.Installed[k]; ok {
			s := string(k)
			if n := b.Names[k]; n != "" {
				s += " " + n
			}
			l = append(l, s+" "+v.String())
		}
	}
	if len(l) == 0 {
		return "nothing installed"
	}
	return strings.Join(l, ", ")
}

func (b Box) targetNote() string {
	if b.Channel == "" {
		return ""
	}
	return " on channel " + b.Channel
}
