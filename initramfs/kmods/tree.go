// Package kmods selects kernel modules for the initramfs from an unpacked
// Debian kernel: it reads each module's .modinfo section, computes the
// dependency closure of a wanted list, and generates the modules.dep,
// modules.alias and modules.softdep files the agent's coldplug reads (the
// Debian package ships none of them).
package kmods

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Module is one loadable module of a kernel's module tree.
type Module struct {
	Info
	// Path is relative to lib/modules/<release> and always ends in ".ko":
	// compressed modules are stored decompressed, as the initramfs itself is
	// compressed and finit_module then needs no decompressor.
	Path string
	// SoftPre and SoftPost are the softdep= names (module names or aliases)
	// to load before and after this module.
	SoftPre, SoftPost []string

	src string // file on the host, possibly compressed
}

// Data returns the module's uncompressed ELF image.
func (m *Module) Data() ([]byte, error) {
	return readModule(m.src)
}

// Tree is the module tree of one kernel release.
type Tree struct {
	Release string
	// Dir is <kernel>/lib/modules/<release>.
	Dir string

	mods    map[string]*Module
	builtin map[string]bool
}

// ErrNoKernel means the kernel directory is missing or incomplete.
var ErrNoKernel = errors.New("no unpacked kernel (run `make deps`)")

// Open reads the module tree under kernelDir, laid out as image/deps.sh
// leaves it: kernelDir/version names the release and the modules live in
// kernelDir/lib/modules/<release>. Without a version file, a single release
// under lib/modules is used (a bare `dpkg-deb -x` of the kernel package).
func Open(kernelDir string) (*Tree, error) {
	release, err := findRelease(kernelDir)
	if err != nil {
		return nil, err
	}
	return Scan(filepath.Join(kernelDir, "lib", "modules", release), release)
}

func findRelease(kernelDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(kernelDir, "version"))
	if err == nil {
		if r := strings.TrimSpace(string(b)); r != "" {
			return r, nil
		}
		return "", fmt.Errorf("%s/version is empty: %w", kernelDir, ErrNoKernel)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read kernel release: %w", err)
	}
	ents, err := os.ReadDir(filepath.Join(kernelDir, "lib", "modules"))
	if err != nil {
		return "", fmt.Errorf("kernel directory %s: %w", kernelDir, ErrNoKernel)
	}
	var releases []string
	for _, e := range ents {
		if e.IsDir() {
			releases = append(releases, e.Name())
		}
	}
	if len(releases) != 1 {
		return "", fmt.Errorf("%s/lib/modules holds %d releases and there is no version file: %w", kernelDir, len(releases), ErrNoKernel)
	}
	return releases[0], nil
}

// moduleSuffixes are the file name endings of modules, compressed or not.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func moduleSuffix(name string) string {
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(name, s) {
			return s
		}
	}
	return ""
}

// Scan reads the .modinfo of every module under dir (lib/modules/<release>).
func Scan(dir, release string) (*Tree, error) {
	if _, err := os.Stat(filepath.Join(dir, "kernel")); err != nil {
		return nil, fmt.Errorf("module tree %s: %w", dir, ErrNoKernel)
	}
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && moduleSuffix(d.Name()) != "" {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", dir, err)
	}
	mods, err := readAll(dir, paths)
	if err != nil {
		return nil, err
	}
	t := &Tree{Release: release, Dir: dir, mods: make(map[string]*Module, len(mods))}
	for _, m := range mods {
		if old, ok := t.mods[m.Name]; ok {
			return nil, fmt.Errorf("module %s twice: %s and %s", m.Name, old.Path, m.Path)
		}
		t.mods[m.Name] = m
	}
	if t.builtin, err = readBuiltin(filepath.Join(dir, "modules.builtin")); err != nil {
		return nil, err
	}
	return t, nil
}

// readAll parses the modules in parallel: a Debian kernel has ~4000 of them
// and this runs on every initramfs build.
func readAll(dir string, paths []string) ([]*Module, error) {
	mods := make([]*Module, len(paths))
	errs := make([]error, len(paths))
	next := make(chan int)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				mods[i], errs[i] = readModuleInfo(dir, paths[i])
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return mods, nil
}

func readModuleInfo(dir, p string) (*Module, error) {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return nil, err
	}
	rel = filepath.ToSlash(rel)
	suffix := moduleSuffix(rel)
	var info Info
	if suffix == ".ko" {
		// Uncompressed: debug/elf reads only the headers and .modinfo.
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		info, err = ReadInfo(f)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", rel, err)
		}
	} else {
		data, err := readModule(p)
		if err != nil {
			return nil, err
		}
		if info, err = ReadInfo(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("module %s: %w", rel, err)
		}
	}
	base := strings.TrimSuffix(rel, suffix)
	if info.Name == "" {
		// Kernels before 5.x wrote no name= field; the file name is it.
		info.Name = filepath.Base(base)
	}
	info.Name = NormalizeName(info.Name)
	m := &Module{Info: info, Path: base + ".ko", src: p}
	m.SoftPre, m.SoftPost = softDeps(info.SoftDeps)
	return m, nil
}

// readModule returns the uncompressed content of the module file p.
func readModule(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader
	switch moduleSuffix(p) {
	case ".ko":
		r = f
	case ".ko.xz":
		xr, err := xz.NewReader(bufio.NewReader(f))
		if err != nil {
			return nil, fmt.Errorf("xz %s: %w", p, err)
		}
		r = xr
	case ".ko.zst":
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("zstd %s: %w", p, err)
		}
		defer zr.Close()
		r = zr
	case ".ko.gz":
		gr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("gzip %s: %w", p, err)
		}
		r = gr
	default:
		return nil, fmt.Errorf("%s is not a kernel module", p)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return data, nil
}

// readBuiltin returns the names of the modules built into the kernel.
func readBuiltin(p string) (map[string]bool, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read builtin list: %w", err)
	}
	builtin := make(map[string]bool)
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name := filepath.Base(line)
		if s := moduleSuffix(name); s != "" {
			name = strings.TrimSuffix(name, s)
		}
		builtin[NormalizeName(name)] = true
	}
	return builtin, nil
}

// Module returns the module called name ('-' and '_' alike).
func (t *Tree) Module(name string) (*Module, bool) {
	m, ok := t.mods[NormalizeName(name)]
	return m, ok
}

// Builtin reports whether name is built into the kernel.
func (t *Tree) Builtin(name string) bool {
	return t.builtin[NormalizeName(name)]
}

// Len is the number of loadable modules in the tree.
func (t *Tree) Len() int { return len(t.mods) }

// sortedNames returns the module names in a stable order.
func (t *Tree) sortedNames() []string {
	names := make([]string, 0, len(t.mods))
	for n := range t.mods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
