package kmods

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// File is a file to place under lib/modules/<release>/ in the initramfs.
type File struct {
	// Name is slash-separated and relative to lib/modules/<release>.
	Name string
	Data []byte
}

// Files returns the selected modules (uncompressed) and the index files that
// describe them: modules.dep, modules.alias, modules.softdep, plus the
// kernel's own modules.order and modules.builtin.
func (t *Tree) Files(sel *Selection) ([]File, error) {
	var files []File
	for _, m := range sel.Modules {
		data, err := m.Data()
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Name, err)
		}
		files = append(files, File{Name: m.Path, Data: data})
	}
	index, err := t.IndexFiles(sel)
	if err != nil {
		return nil, err
	}
	return append(files, index...), nil
}

// IndexFiles generates the index files for sel.
func (t *Tree) IndexFiles(sel *Selection) ([]File, error) {
	dep, err := t.ModulesDep(sel)
	if err != nil {
		return nil, err
	}
	files := []File{
		{Name: "modules.dep", Data: dep},
		{Name: "modules.alias", Data: ModulesAlias(sel)},
		{Name: "modules.softdep", Data: ModulesSoftdep(sel)},
	}
	// Copied as they are: they describe the kernel, not the selection.
	for _, name := range []string{"modules.order", "modules.builtin"} {
		b, err := os.ReadFile(filepath.Join(t.Dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("copy %s: %w", name, err)
		}
		files = append(files, File{Name: name, Data: b})
	}
	return files, nil
}

// ModulesDep renders modules.dep as depmod does: one line per module,
// "path: dep dep …" with the full transitive dependency list, the module to
// load first at the end.
func (t *Tree) ModulesDep(sel *Selection) ([]byte, error) {
	in := make(map[string]bool, len(sel.Modules))
	for _, m := range sel.Modules {
		in[m.Name] = true
	}
	var b bytes.Buffer
	for _, m := range sel.Modules {
		deps, err := t.Deps(m)
		if err != nil {
			return nil, err
		}
		b.WriteString(m.Path)
		b.WriteByte(':')
		for _, d := range deps {
			if !in[d.Name] {
				return nil, fmt.Errorf("modules.dep: %s needs %s, which is not selected", m.Name, d.Name)
			}
			b.WriteByte(' ')
			b.WriteString(d.Path)
		}
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// ModulesAlias renders modules.alias: "alias <pattern> <module>" for every
// alias= of every selected module.
func ModulesAlias(sel *Selection) []byte {
	var b bytes.Buffer
	b.WriteString("# Aliases extracted from modules themselves.\n")
	for _, m := range sel.Modules {
		for _, a := range m.Aliases {
			// A pattern with blanks would break the line format; no
			// kernel module has one, but never write a corrupt index.
			if strings.ContainsAny(a, " \t\n") {
				continue
			}
			fmt.Fprintf(&b, "alias %s %s\n", a, m.Name)
		}
	}
	return b.Bytes()
}

// ModulesSoftdep renders modules.softdep: "softdep <module> pre: … post: …".
func ModulesSoftdep(sel *Selection) []byte {
	var b bytes.Buffer
	b.WriteString("# Soft dependencies extracted from modules themselves.\n")
	for _, m := range sel.Modules {
		if len(m.SoftPre) == 0 && len(m.SoftPost) == 0 {
			continue
		}
		fmt.Fprintf(&b, "softdep %s", m.Name)
		if len(m.SoftPre) > 0 {
			fmt.Fprintf(&b, " pre: %s", strings.Join(m.SoftPre, " "))
		}
		if len(m.SoftPost) > 0 {
			fmt.Fprintf(&b, " post: %s", strings.Join(m.SoftPost, " "))
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}
