package qemu

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testKernel returns the kernel the VM tests boot (KEEL_KERNEL), skipping
// the test when VM tests are off (KEEL_VM!=1) or no kernel is given.
func testKernel(t *testing.T) string {
	t.Helper()
	if os.Getenv("KEEL_VM") != "1" {
		t.Skip("VM test: set KEEL_VM=1 and KEEL_KERNEL=/path/to/vmlinuz to boot QEMU")
	}
	k := os.Getenv("KEEL_KERNEL")
	if k == "" {
		t.Skip("VM test: set KEEL_KERNEL to a kernel, e.g. build/cache/k/boot/vmlinuz-6.1.0-56-amd64")
	}
	if _, err := os.Stat(k); err != nil {
		t.Fatalf("KEEL_KERNEL: %v", err)
	}
	return k
}

// moduleDir finds the modules of a Debian kernel unpacked with dpkg-deb -x:
// ROOT/boot/vmlinuz-VERSION goes with ROOT/lib/modules/VERSION.
func moduleDir(kernel string) (string, bool) {
	// build/kernel as image/deps.sh lays it out: vmlinuz, version, lib/modules.
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(kernel), "version")); err == nil {
		dir := filepath.Join(filepath.Dir(kernel), "lib", "modules", strings.TrimSpace(string(b)))
		if _, err := os.Stat(filepath.Join(dir, "kernel")); err == nil {
			return dir, true
		}
	}
	version, ok := strings.CutPrefix(filepath.Base(kernel), "vmlinuz-")
	if !ok {
		return "", false
	}
	dir := filepath.Join(filepath.Dir(filepath.Dir(kernel)), "lib", "modules", version)
	if _, err := os.Stat(filepath.Join(dir, "kernel")); err != nil {
		return "", false
	}
	return dir, true
}

// guestInitramfs builds the test initramfs: testdata/guestinit as /init and
// the given modules with their dependencies, in load order. It skips the
// test when the kernel's modules cannot be found.
func guestInitramfs(t *testing.T, kernel string, modules ...string) string {
	t.Helper()
	modDir, ok := moduleDir(kernel)
	if !ok {
		t.Skipf("no modules next to %s (want ROOT/lib/modules/VERSION for ROOT/boot/vmlinuz-VERSION)", kernel)
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the test init: %v", err)
	}
	build := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, "./testdata/guestinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build guestinit: %v\n%s", err, out)
	}
	order, err := moduleOrder(modDir, modules)
	if err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	w := &cpioWriter{w: &buf}
	for _, d := range []string{"dev", "proc", "sys", "modules"} {
		w.dir(d)
	}
	w.charDev("dev/console", 5, 1)
	initData, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	w.file("init", 0o755, initData)
	var names []string
	for _, path := range order {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(path)
		names = append(names, name)
		w.file("modules/"+name, 0o644, data)
	}
	w.file("modules.load", 0o644, []byte(strings.Join(names, "\n")+"\n"))
	w.trailer()
	if w.err != nil {
		t.Fatal(w.err)
	}
	out := filepath.Join(dir, "initramfs.cpio")
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// moduleOrder returns the paths of modules and of everything they depend on,
// dependencies first, reading "depends=" from each module's .modinfo (the
// Debian package ships no modules.dep).
func moduleOrder(modDir string, modules []string) ([]string, error) {
	paths := map[string]string{}
	err := filepath.WalkDir(filepath.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			paths[modName(strings.TrimSuffix(d.Name(), ".ko"))] = p
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("modules: %w", err)
	}
	var order []string
	seen := map[string]bool{}
	var visit func(name string) error
	visit = func(name string) error {
		name = modName(name)
		if seen[name] {
			return nil
		}
		seen[name] = true
		p, ok := paths[name]
		if !ok {
			return fmt.Errorf("module %s not found under %s", name, modDir)
		}
		deps, err := modDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		order = append(order, p)
		return nil
	}
	for _, m := range modules {
		if err := visit(m); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

func modDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("module %s: no .modinfo", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// cpioWriter writes the "newc" cpio format the kernel unpacks as initramfs,
// including a device node, which needs no privileges when written by hand.
type cpioWriter struct {
	w   io.Writer
	ino int
	err error
}

func (c *cpioWriter) entry(name string, mode, rdevMajor, rdevMinor int, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	var b bytes.Buffer
	b.WriteString(hdr)
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(data)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, c.err = c.w.Write(b.Bytes())
}

func (c *cpioWriter) dir(name string) { c.entry(name, 0o040755, 0, 0, nil) }
func (c *cpioWriter) file(name string, perm int, data []byte) {
	c.entry(name, 0o100000|perm, 0, 0, data)
}
func (c *cpioWriter) charDev(name string, major, minor int) {
	c.entry(name, 0o020600, major, minor, nil)
}
func (c *cpioWriter) trailer() { c.entry("TRAILER!!!", 0, 0, 0, nil) }
