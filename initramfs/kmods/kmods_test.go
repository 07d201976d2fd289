package kmods

import (
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func compress(t *testing.T, kind string, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch kind {
	case "zst":
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case "xz":
		w, err := xz.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case "gz":
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	}
	return b.Bytes()
}

const synthRelease = "9.9.9-synth"

func synthTree(t *testing.T) (*Tree, map[string][]byte) {
	t.Helper()
	raw := map[string][]byte{
		"d_fs": fakeModule("name=d_fs", "depends=bi", "softdep=pre: crypto-x", "alias=fs-dfs"),
	}
	mods := map[string][]byte{
		"kernel/drivers/a.ko":         fakeModule("name=a", "depends=b,c", "alias=pci:v0000AAAAd*sv*sd*bc*sc*i*"),
		"kernel/drivers/b.ko":         fakeModule("name=b", "depends=c"),
		"kernel/lib/c.ko":             fakeModule("name=c", "depends="),
		"kernel/fs/d-fs.ko.zst":       compress(t, "zst", raw["d_fs"]),
		"kernel/crypto/x-gen.ko.xz":   compress(t, "xz", fakeModule("name=x_gen", "alias=crypto-x", "alias=x")),
		"kernel/crypto/x-fast.ko.gz":  compress(t, "gz", fakeModule("name=x_fast", "alias=crypto-x")),
		"kernel/drivers/unused.ko":    fakeModule("name=unused", "depends=c"),
		"kernel/drivers/broken.ko":    fakeModule("name=broken", "depends=missing"),
		"kernel/drivers/cyc1.ko":      fakeModule("name=cyc1", "depends=cyc2"),
		"kernel/drivers/cyc2.ko":      fakeModule("name=cyc2", "depends=cyc1"),
		"kernel/drivers/old-style.ko": fakeModule("depends="),
	}
	tree, err := Open(writeTree(t, synthRelease, mods, "kernel/lib/bi.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	return tree, raw
}

func paths(mods []*Module) []string {
	var out []string
	for _, m := range mods {
		out = append(out, m.Path)
	}
	return out
}

func TestClosureAndModulesDep(t *testing.T) {
	tree, _ := synthTree(t)
	if tree.Release != synthRelease || tree.Len() != 11 {
		t.Fatalf("tree %s with %d modules", tree.Release, tree.Len())
	}
	sel, err := tree.Closure("a")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/drivers/a.ko", "kernel/drivers/b.ko", "kernel/lib/c.ko"}
	if got := paths(sel.Modules); !reflect.DeepEqual(got, want) {
		t.Errorf("Closure(a) = %v, want %v", got, want)
	}
	dep, err := tree.ModulesDep(sel)
	if err != nil {
		t.Fatal(err)
	}
	// a needs b and c, b needs c: modprobe loads from the end, c first.
	wantDep := "kernel/drivers/a.ko: kernel/drivers/b.ko kernel/lib/c.ko\n" +
		"kernel/drivers/b.ko: kernel/lib/c.ko\n" +
		"kernel/lib/c.ko:\n"
	if string(dep) != wantDep {
		t.Errorf("modules.dep:\n%s\nwant:\n%s", dep, wantDep)
	}
	if got := string(ModulesAlias(sel)); !strings.Contains(got, "\nalias pci:v0000AAAAd*sv*sd*bc*sc*i* a\n") {
		t.Errorf("modules.alias:\n%s", got)
	}
}

func TestClosureFollowsSoftdepsAliasesAndBuiltins(t *testing.T) {
	tree, raw := synthTree(t)
	sel, err := tree.Closure("fs-dfs", "bi")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/crypto/x-fast.ko", "kernel/crypto/x-gen.ko", "kernel/fs/d-fs.ko"}
	if got := paths(sel.Modules); !reflect.DeepEqual(got, want) {
		t.Errorf("Closure(fs-dfs) = %v, want %v", got, want)
	}
	if !reflect.DeepEqual(sel.Builtin, []string{"bi"}) {
		t.Errorf("Builtin = %v", sel.Builtin)
	}
	dep, err := tree.ModulesDep(sel)
	if err != nil {
		t.Fatal(err)
	}
	// The builtin dependency is not a file to load.
	if !strings.Contains(string(dep), "kernel/fs/d-fs.ko:\n") {
		t.Errorf("modules.dep:\n%s", dep)
	}
	if got := string(ModulesSoftdep(sel)); !strings.Contains(got, "softdep d_fs pre: crypto-x\n") {
		t.Errorf("modules.softdep:\n%s", got)
	}
	alias := string(ModulesAlias(sel))
	for _, line := range []string{"alias crypto-x x_fast", "alias crypto-x x_gen", "alias x x_gen", "alias fs-dfs d_fs"} {
		if !strings.Contains(alias, line+"\n") {
			t.Errorf("modules.alias lacks %q:\n%s", line, alias)
		}
	}

	files, err := tree.Files(sel)
	if err != nil {
		t.Fatal(err)
	}
	byName := make(map[string][]byte)
	for _, f := range files {
		byName[f.Name] = f.Data
	}
	// Compressed modules are shipped decompressed.
	if !bytes.Equal(byName["kernel/fs/d-fs.ko"], raw["d_fs"]) {
		t.Error("kernel/fs/d-fs.ko is not the decompressed module")
	}
	for _, n := range []string{"modules.dep", "modules.alias", "modules.softdep", "modules.order", "modules.builtin", "kernel/crypto/x-gen.ko", "kernel/crypto/x-fast.ko"} {
		if _, ok := byName[n]; !ok {
			t.Errorf("Files lacks %s", n)
		}
	}
}

func TestClosureErrors(t *testing.T) {
	tree, _ := synthTree(t)
	if _, err := tree.Closure("nope"); err == nil {
		t.Error("Closure(nope) succeeded")
	}
	if _, err := tree.Closure("broken"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Closure(broken) = %v", err)
	}
	sel, err := tree.Closure("cyc1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.ModulesDep(sel); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("ModulesDep with a cycle = %v", err)
	}
	// No name= field (old kernels): the file name, '-' made '_'.
	if m, ok := tree.Module("old-style"); !ok || m.Name != "old_style" {
		t.Errorf("old-style module: %+v %v", m, ok)
	}
}

func TestOpenWithoutKernel(t *testing.T) {
	_, err := Open(filepath.Join(t.TempDir(), "kernel"))
	if !errors.Is(err, ErrNoKernel) || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("Open(missing) = %v, want ErrNoKernel naming make deps", err)
	}
}

func TestOpenWithoutVersionFile(t *testing.T) {
	kdir := writeTree(t, synthRelease, map[string][]byte{"kernel/lib/c.ko": fakeModule("name=c")}, "")
	if err := os.Remove(filepath.Join(kdir, "version")); err != nil {
		t.Fatal(err)
	}
	tree, err := Open(kdir)
	if err != nil || tree.Release != synthRelease {
		t.Fatalf("Open = %v, %v", tree, err)
	}
}
