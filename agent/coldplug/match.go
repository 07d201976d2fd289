package coldplug

import "strings"

// match reports whether name matches the shell pattern as fnmatch(3) with no
// flags would for modules.alias patterns: '*' matches any run of bytes,
// '?' one byte, and "[...]" a set ("[!...]" or "[^...]" its complement, with
// ranges a-z). Every other byte, '/' and '\\' included, matches itself:
// modaliases are not paths, so path.Match's rules for '/' and '\\' do not
// apply.
func match(pattern, name string) bool {
	// Iterative matcher with one backtrack point for the last '*': linear
	// for the patterns depmod writes, and no recursion on the boot path.
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				starP, starN = p, n
				p++
				continue
			case '?':
				p++
				n++
				continue
			case '[':
				if ok, next, valid := matchClass(pattern, p, name[n]); valid {
					if ok {
						p = next
						n++
						continue
					}
				} else if name[n] == '[' { // unterminated '[' is literal
					p++
					n++
					continue
				}
			default:
				if c == name[n] {
					p++
					n++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' swallow one more byte and retry.
		starN++
		p, n = starP+1, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches c against the bracket expression starting at
// pattern[open] == '['. It returns whether c is in the set, the index after
// the closing ']', and false for valid if the bracket is never closed.
func matchClass(pattern string, open int, c byte) (ok bool, next int, valid bool) {
	i := open + 1
	negate := false
	if i < len(pattern) && (pattern[i] == '!' || pattern[i] == '^') {
		negate = true
		i++
	}
	first := true
	for i < len(pattern) {
		lo := pattern[i]
		if lo == ']' && !first {
			return ok != negate, i + 1, true
		}
		first = false
		hi := lo
		if i+2 < len(pattern) && pattern[i+1] == '-' && pattern[i+2] != ']' {
			hi = pattern[i+2]
			i += 2
		}
		if lo <= c && c <= hi {
			ok = true
		}
		i++
	}
	return false, 0, false
}

// isPattern reports whether s has any byte match treats specially.
func isPattern(s string) bool {
	return strings.ContainsAny(s, "*?[")
}
