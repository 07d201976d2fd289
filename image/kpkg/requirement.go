package kpkg

import (
	"fmt"
	"strings"
)

// Op compares an installed version with a requirement's version.
type Op string

// The comparison operators a requirement may use.
const (
	OpGE Op = ">="
	OpGT Op = ">"
	OpLE Op = "<="
	OpLT Op = "<"
	OpEQ Op = "="
)

// Requirement is a condition on an installed package, such as
// "base >= 3.3.2". A requirement on the package's own kind ("app >=
// 12.1.0" in an app package) makes an intermediate version a prerequisite.
type Requirement struct {
	Kind    Kind    `json:"kind"`
	Op      Op      `json:"op"`
	Version Version `json:"version"`
}

// ParseRequirement parses "KIND OP VERSION", e.g. "base >= 3.3.2"; the
// spaces are optional and "==" means "=".
func ParseRequirement(s string) (Requirement, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexAny(t, "<>=")
	if i < 0 {
		return Requirement{}, fmt.Errorf("requirement %q is not KIND OP VERSION, e.g. \"base >= 3.3.2\"", s)
	}
	j := i
	for j < len(t) && strings.IndexByte("<>=", t[j]) >= 0 {
		j++
	}
	r := Requirement{Kind: Kind(strings.TrimSpace(t[:i])), Op: Op(t[i:j])}
	if r.Op == "==" {
		r.Op = OpEQ
	}
	v, err := ParseVersion(strings.TrimSpace(t[j:]))
	if err != nil {
		return Requirement{}, fmt.Errorf("requirement %q: %w", s, err)
	}
	r.Version = v
	if err := r.validate(); err != nil {
		return Requirement{}, err
	}
	return r, nil
}

func (r Requirement) validate() error {
	if !r.Kind.valid() {
		return fmt.Errorf("requirement %q: kind %q is neither %q nor %q", r, r.Kind, KindBase, KindApp)
	}
	switch r.Op {
	case OpGE, OpGT, OpLE, OpLT, OpEQ:
		return nil
	}
	return fmt.Errorf("requirement %q: operator %q is not one of >=, >, <=, <, =", r, r.Op)
}

func (r Requirement) String() string { return fmt.Sprintf("%s %s %s", r.Kind, r.Op, r.Version) }

// Allows says whether version v satisfies the requirement.
func (r Requirement) Allows(v Version) bool {
	c := v.Compare(r.Version)
	switch r.Op {
	case OpGE:
		return c >= 0
	case OpGT:
		return c > 0
	case OpLE:
		return c <= 0
	case OpLT:
		return c < 0
	case OpEQ:
		return c == 0
	}
	return false
}

// Check evaluates the requirement against the installed versions, one per
// kind, and says why it does not hold: "requires base >= 3.3.2; installed
// 3.2.4".
func (r Requirement) Check(installed map[Kind]Version) error {
	v, ok := installed[r.Kind]
	if !ok {
		return fmt.Errorf("requires %s; no %s is installed", r, r.Kind)
	}
	if !r.Allows(v) {
		return fmt.Errorf("requires %s; installed %s", r, v)
	}
	return nil
}
