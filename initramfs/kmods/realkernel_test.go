package kmods

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"keel.dev/keel/agent/coldplug"
)

// realTree opens the Debian kernel image/deps.sh unpacks (or the bare
// unpack in build/cache/k), or skips.
func realTree(t *testing.T) *Tree {
	t.Helper()
	for _, dir := range []string{"../../build/kernel", "../../build/cache/k"} {
		if _, err := os.Stat(filepath.Join(dir, "lib", "modules")); err != nil {
			continue
		}
		tree, err := Open(dir)
		if err != nil {
			t.Fatalf("Open(%s): %v", dir, err)
		}
		return tree
	}
	t.Skip("no unpacked kernel in build/kernel or build/cache/k; run `make deps`")
	return nil
}

func TestRealKernelClosure(t *testing.T) {
	tree := realTree(t)
	sel, err := tree.Closure(Wanted()...)
	if err != nil {
		t.Fatal(err)
	}
	in := make(map[string]bool)
	for _, m := range sel.Modules {
		in[m.Name] = true
	}
	for _, w := range Wanted() {
		if !in[NormalizeName(w)] && !tree.Builtin(w) {
			t.Errorf("wanted module %s neither selected nor built in", w)
		}
	}
	// Soft dependencies ext4 and libcrc32c need at mount time, which the
	// kernel would otherwise request through a modprobe that isn't there.
	for _, m := range []string{"crc32c_generic", "realtek", "crct10dif_generic"} {
		if !in[m] {
			t.Errorf("soft dependency %s not selected", m)
		}
	}

	dep, err := tree.ModulesDep(sel)
	if err != nil {
		t.Fatal(err)
	}
	// Every line's list must be a valid modprobe order: loaded from the
	// end, each module comes after all of its own dependencies.
	byPath := make(map[string]*Module)
	for _, m := range sel.Modules {
		byPath[m.Path] = m
	}
	lines := strings.Split(strings.TrimSpace(string(dep)), "\n")
	if len(lines) != len(sel.Modules) {
		t.Errorf("modules.dep has %d lines for %d modules", len(lines), len(sel.Modules))
	}
	for _, line := range lines {
		file, rest, _ := strings.Cut(line, ":")
		deps := strings.Fields(rest)
		loaded := map[string]bool{}
		for i := len(deps) - 1; i >= 0; i-- {
			m := byPath[deps[i]]
			if m == nil {
				t.Fatalf("%s: dependency %s not selected", file, deps[i])
			}
			for _, d := range m.Depends {
				if dm, ok := tree.Module(d); ok && !loaded[dm.Path] {
					t.Errorf("%s: %s listed to load before its dependency %s", file, m.Path, dm.Path)
				}
			}
			loaded[m.Path] = true
		}
		for _, d := range byPath[file].Depends {
			if dm, ok := tree.Module(d); ok && !loaded[dm.Path] {
				t.Errorf("%s: direct dependency %s missing from its line", file, dm.Path)
			}
		}
	}
	for _, want := range []string{
		"kernel/fs/ext4/ext4.ko: ",
		"kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n",
		"kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n",
	} {
		if !strings.Contains(string(dep), want) {
			t.Errorf("modules.dep lacks %q", want)
		}
	}
	alias := string(ModulesAlias(sel))
	for _, want := range []string{
		"alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n",
		"alias virtio:d00000001v* virtio_net\n",
		"alias virtio:d00000002v* virtio_blk\n",
		"alias fs-ext4 ext4\n",
		"alias crypto-crc32c crc32c_generic\n",
	} {
		if !strings.Contains(alias, want) {
			t.Errorf("modules.alias lacks %q", want)
		}
	}
}

// TestRealKernelWithColdplug writes the generated tree where the agent will
// find it and runs the agent's coldplug over it with a fake kernel: the
// build side and the boot side must agree on the index formats.
func TestRealKernelWithColdplug(t *testing.T) {
	tree := realTree(t)
	sel, err := tree.Closure(Wanted()...)
	if err != nil {
		t.Fatal(err)
	}
	files, err := tree.IndexFiles(sel)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	write := func(p, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	modDir := filepath.Join(root, "lib", "modules", tree.Release)
	for _, f := range files {
		write(filepath.Join(modDir, f.Name), string(f.Data))
	}
	devices := filepath.Join(root, "sys", "devices", "pci0000:00")
	// device adds a device and its link in its bus's list, where the
	// coldplug looks.
	device := func(path, bus, modalias string) {
		t.Helper()
		write(filepath.Join(devices, path, "modalias"), modalias+"\n")
		list := filepath.Join(root, "sys", "bus", bus, "devices")
		if err := os.MkdirAll(list, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(devices, path), filepath.Join(list, filepath.Base(path))); err != nil {
			t.Fatal(err)
		}
	}
	// QEMU's virtio-net (transitional) and an e1000.
	device("0000:00:03.0", "pci", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	device("0000:00:04.0", "pci", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00")

	var inserted []string
	insert := func(file, _ string) error {
		rel, err := filepath.Rel(modDir, file)
		if err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("module outside the tree: %s", file)
		}
		m, ok := tree.Module(strings.TrimSuffix(filepath.Base(rel), ".ko"))
		if !ok || m.Path != filepath.ToSlash(rel) {
			return fmt.Errorf("unknown module file %s", rel)
		}
		for _, d := range m.Depends {
			if !slices.Contains(inserted, d) && !tree.Builtin(d) {
				return fmt.Errorf("%s loaded before its dependency %s", m.Name, d)
			}
		}
		inserted = append(inserted, m.Name)
		if m.Name == "virtio_pci" {
			device("0000:00:03.0/virtio0", "virtio", "virtio:d00000001v00001AF4")
		}
		return nil
	}
	l, err := coldplug.New(coldplug.Options{Root: root, Release: tree.Release, Insert: insert})
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := l.Coldplug(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if f := l.Failed(); len(f) > 0 {
		t.Errorf("failed: %v", f)
	}
	for _, m := range []string{"virtio_pci", "virtio_net", "e1000"} {
		if !slices.Contains(loaded, m) {
			t.Errorf("coldplug did not load %s: %v", m, loaded)
		}
	}
	if err := l.Load(context.Background(), "ext4"); err != nil {
		t.Fatal(err)
	}
	crc, jbd := slices.Index(inserted, "crc32c_generic"), slices.Index(inserted, "jbd2")
	if crc < 0 || jbd < 0 || crc > jbd {
		t.Errorf("ext4 load order %v: want crc32c_generic (softdep) before jbd2", inserted)
	}
}
