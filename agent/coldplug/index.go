package coldplug

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// index is the parsed content of lib/modules/<release>: which file holds
// each module, what it depends on, and which aliases name it.
type index struct {
	dir string // lib/modules/<release> on the host file system

	// files maps a module name to its path relative to dir.
	files map[string]string
	// deps maps a module name to its dependencies in modules.dep order
	// (load them from the last to the first).
	deps map[string][]string
	// exact maps an alias without wildcards ("fs-ext4") to module names.
	exact map[string][]string
	// globs holds wildcard aliases, bucketed by their literal prefix up to
	// the first ':' ("pci", "virtio", "acpi"…) so a modalias is only
	// compared with the patterns of its own bus.
	globs map[string][]alias
	// anyBus holds wildcard aliases whose bus part is itself a pattern
	// ("acpi*:PNP0C0C:*"); every modalias is compared with them.
	anyBus []alias
	// softPre and softPost are modules.softdep's names, per module.
	softPre, softPost map[string][]string
	builtin           map[string]bool
}

type alias struct {
	pattern string
	module  string
}

// modName turns a module file or request name into the kernel's name.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// readIndex parses modules.dep (required), modules.alias, modules.softdep and
// modules.builtin (optional) under dir.
func readIndex(dir string) (*index, error) {
	ix := &index{
		dir:      dir,
		files:    make(map[string]string),
		deps:     make(map[string][]string),
		exact:    make(map[string][]string),
		globs:    make(map[string][]alias),
		softPre:  make(map[string][]string),
		softPost: make(map[string][]string),
		builtin:  make(map[string]bool),
	}
	if err := eachLine(filepath.Join(dir, "modules.dep"), true, ix.addDep); err != nil {
		return nil, err
	}
	if err := eachLine(filepath.Join(dir, "modules.alias"), false, ix.addAlias); err != nil {
		return nil, err
	}
	if err := eachLine(filepath.Join(dir, "modules.softdep"), false, ix.addSoftdep); err != nil {
		return nil, err
	}
	if err := eachLine(filepath.Join(dir, "modules.builtin"), false, func(line string) error {
		ix.builtin[fileModName(line)] = true
		return nil
	}); err != nil {
		return nil, err
	}
	return ix, nil
}

// eachLine calls fn for every non-blank, non-comment line of the file p.
func eachLine(p string, required bool, fn func(string) error) error {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil
	}
	if err != nil {
		return fmt.Errorf("module index: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("%s:%d: %w", p, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", p, err)
	}
	return nil
}

// fileModName is the module name of a path such as kernel/fs/fat/vfat.ko.
func fileModName(p string) string {
	base := path.Base(p)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return modName(base)
}

// addDep parses "kernel/a.ko: kernel/b.ko kernel/c.ko".
func (ix *index) addDep(line string) error {
	file, rest, ok := strings.Cut(line, ":")
	if !ok {
		return fmt.Errorf("modules.dep line without ':': %q", line)
	}
	name := fileModName(file)
	ix.files[name] = file
	var deps []string
	for _, d := range strings.Fields(rest) {
		dn := fileModName(d)
		deps = append(deps, dn)
		if _, ok := ix.files[dn]; !ok {
			// Lines are in no particular order; the dependency's own
			// line will say the same path.
			ix.files[dn] = d
		}
	}
	ix.deps[name] = deps
	return nil
}

// addAlias parses "alias <pattern> <module>".
func (ix *index) addAlias(line string) error {
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "alias" {
		return fmt.Errorf("bad modules.alias line %q", line)
	}
	a := alias{pattern: f[1], module: modName(f[2])}
	if !isPattern(a.pattern) {
		ix.exact[a.pattern] = append(ix.exact[a.pattern], a.module)
		return nil
	}
	bus, _, ok := strings.Cut(a.pattern, ":")
	if !ok || isPattern(bus) {
		ix.anyBus = append(ix.anyBus, a)
		return nil
	}
	ix.globs[bus] = append(ix.globs[bus], a)
	return nil
}

// addSoftdep parses "softdep <module> pre: a b post: c".
func (ix *index) addSoftdep(line string) error {
	f := strings.Fields(line)
	if len(f) < 2 || f[0] != "softdep" {
		return fmt.Errorf("bad modules.softdep line %q", line)
	}
	name := modName(f[1])
	var pre, post []string
	var cur *[]string
	for _, tok := range f[2:] {
		switch tok {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur == nil {
				return fmt.Errorf("softdep name %q comes before any pre: or post: marker", tok)
			}
			*cur = append(*cur, tok)
		}
	}
	ix.softPre[name] = append(ix.softPre[name], pre...)
	ix.softPost[name] = append(ix.softPost[name], post...)
	return nil
}

// lookup returns the modules a name stands for: the module itself, or every
// module with an alias matching it (modalias strings, "fs-ext4",
// "crypto-crc32c"…), in modules.alias order without duplicates.
func (ix *index) lookup(name string) []string {
	if _, ok := ix.files[modName(name)]; ok {
		return []string{modName(name)}
	}
	var out []string
	seen := make(map[string]bool)
	add := func(m string) {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	for _, m := range ix.exact[name] {
		add(m)
	}
	bus, _, _ := strings.Cut(name, ":")
	for _, a := range ix.globs[bus] {
		if match(a.pattern, name) {
			add(a.module)
		}
	}
	for _, a := range ix.anyBus {
		if match(a.pattern, name) {
			add(a.module)
		}
	}
	return out
}
