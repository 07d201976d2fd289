package kmods

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"strings"
)

// Info is what a module's .modinfo section says about it.
type Info struct {
	// Name is the module name the kernel uses (underscores, no suffix).
	Name string
	// Depends are the names of modules whose symbols this one uses.
	Depends []string
	// Aliases are modalias patterns (pci:v00001AF4d…*) and names such as
	// "fs-ext4" or "crypto-crc32c" that request_module users ask for.
	Aliases []string
	// SoftDeps holds the raw softdep= values, e.g. "pre: crypto-crc32c".
	SoftDeps []string
	// VerMagic is the kernel the module was built for.
	VerMagic string
}

// ReadInfo parses the .modinfo section of the ELF module in r.
func ReadInfo(r io.ReaderAt) (Info, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return Info{}, fmt.Errorf("parse ELF: %w", err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return Info{}, fmt.Errorf("no .modinfo section")
	}
	data, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("read .modinfo: %w", err)
	}
	return parseModinfo(data), nil
}

// parseModinfo splits the NUL-separated key=value strings of a .modinfo
// section; the linker pads between entries with extra NULs.
func parseModinfo(data []byte) Info {
	var info Info
	for _, field := range bytes.Split(data, []byte{0}) {
		key, value, ok := strings.Cut(string(field), "=")
		if !ok {
			continue
		}
		switch key {
		case "name":
			info.Name = value
		case "depends":
			for _, d := range strings.Split(value, ",") {
				if d != "" {
					info.Depends = append(info.Depends, NormalizeName(d))
				}
			}
		case "alias":
			info.Aliases = append(info.Aliases, value)
		case "softdep":
			info.SoftDeps = append(info.SoftDeps, value)
		case "vermagic":
			info.VerMagic = strings.TrimSpace(value)
		}
	}
	return info
}

// NormalizeName turns a module file or request name into the kernel's module
// name: the kernel treats '-' and '_' alike in names and reports '_'.
func NormalizeName(s string) string {
	return strings.ReplaceAll(s, "-", "_")
}

// softDeps splits softdep values ("pre: a b post: c") into their pre and
// post lists.
func softDeps(values []string) (pre, post []string) {
	for _, v := range values {
		var cur *[]string
		for _, tok := range strings.Fields(v) {
			switch tok {
			case "pre:":
				cur = &pre
			case "post:":
				cur = &post
			default:
				if cur != nil {
					*cur = append(*cur, tok)
				}
			}
		}
	}
	return pre, post
}
