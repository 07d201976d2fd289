package kmods

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// Selection is a set of modules closed under their dependencies.
type Selection struct {
	// Modules are sorted by Path.
	Modules []*Module
	// Builtin are requested names the kernel has built in: nothing to ship.
	Builtin []string
	// Unresolved are softdep names no module provides; modprobe ignores
	// those too (usually the feature is built in under another name).
	Unresolved []string
}

// Resolve returns the modules a name stands for: the module of that name, or
// else every module with an alias pattern matching it, as modprobe does
// (e.g. "crypto-crc32c" gives crc32c_generic and crc32c_intel).
func (t *Tree) Resolve(name string) []*Module {
	if m, ok := t.Module(name); ok {
		return []*Module{m}
	}
	var out []*Module
	for _, n := range t.sortedNames() {
		m := t.mods[n]
		for _, a := range m.Aliases {
			if aliasMatch(a, name) {
				out = append(out, m)
				break
			}
		}
	}
	return out
}

// aliasMatch matches a modules.alias shell pattern. Module aliases and
// request names contain neither '/' nor '\\', so path.Match behaves like
// fnmatch(3) here.
func aliasMatch(pattern, name string) bool {
	if !strings.ContainsAny(pattern, "*?[") {
		return pattern == name
	}
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

// Closure returns the modules named (module names or aliases) together with
// their hard dependencies (depends=) and soft dependencies (softdep=), so
// that every entry of the generated modules.dep resolves inside the set.
func (t *Tree) Closure(names ...string) (*Selection, error) {
	sel := &Selection{}
	seen := make(map[string]bool)
	var queue []*Module
	add := func(ms ...*Module) {
		for _, m := range ms {
			if !seen[m.Name] {
				seen[m.Name] = true
				queue = append(queue, m)
			}
		}
	}
	for _, n := range names {
		ms := t.Resolve(n)
		switch {
		case len(ms) > 0:
			add(ms...)
		case t.Builtin(n):
			sel.Builtin = append(sel.Builtin, NormalizeName(n))
		default:
			return nil, fmt.Errorf("module %q: not in %s and not built in", n, t.Release)
		}
	}
	unresolved := make(map[string]bool)
	for len(queue) > 0 {
		m := queue[0]
		queue = queue[1:]
		sel.Modules = append(sel.Modules, m)
		for _, d := range m.Depends {
			dm, ok := t.Module(d)
			if !ok {
				if t.Builtin(d) {
					continue
				}
				return nil, fmt.Errorf("module %s depends on %s, which %s lacks", m.Name, d, t.Release)
			}
			add(dm)
		}
		for _, s := range append(append([]string(nil), m.SoftPre...), m.SoftPost...) {
			ms := t.Resolve(s)
			if len(ms) == 0 && !t.Builtin(s) {
				unresolved[s] = true
			}
			add(ms...)
		}
	}
	sort.Slice(sel.Modules, func(i, j int) bool { return sel.Modules[i].Path < sel.Modules[j].Path })
	for s := range unresolved {
		sel.Unresolved = append(sel.Unresolved, s)
	}
	sort.Strings(sel.Unresolved)
	return sel, nil
}

// Deps returns m's transitive hard dependencies in modules.dep order: a
// module appears before the modules it depends on, so loading the list from
// its end to its start (as modprobe does) loads every dependency first.
func (t *Tree) Deps(m *Module) ([]*Module, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := make(map[string]int)
	var post []*Module // dependencies before dependents
	var visit func(*Module, []string) error
	visit = func(x *Module, stack []string) error {
		switch state[x.Name] {
		case visiting:
			return fmt.Errorf("dependency cycle: %s -> %s", strings.Join(stack, " -> "), x.Name)
		case done:
			return nil
		}
		state[x.Name] = visiting
		for _, d := range x.Depends {
			dm, ok := t.Module(d)
			if !ok {
				if t.Builtin(d) {
					continue
				}
				return fmt.Errorf("module %s depends on %s, which %s lacks", x.Name, d, t.Release)
			}
			if err := visit(dm, append(stack, x.Name)); err != nil {
				return err
			}
		}
		state[x.Name] = done
		if x != m {
			post = append(post, x)
		}
		return nil
	}
	if err := visit(m, nil); err != nil {
		return nil, err
	}
	// Reverse: dependents first, the deepest dependency last.
	for i, j := 0, len(post)-1; i < j; i, j = i+1, j-1 {
		post[i], post[j] = post[j], post[i]
	}
	return post, nil
}
