package appimage

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/squashfs"

	"keel.dev/keel/image/appspec"
)

func openSquashfs(t *testing.T, path string) *squashfs.FileSystem {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := file.OpenFromPath(path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	fs, err := squashfs.Read(b, st.Size(), 0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func readFile(t *testing.T, fs *squashfs.FileSystem, name string) []byte {
	t.Helper()
	f, err := fs.OpenFile(name, os.O_RDONLY)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b
}

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	out := filepath.Join(dir, "demo.squashfs")
	if err := DemoCached(out, "1.1.0", cache); err != nil {
		t.Fatal(err)
	}
	fs := openSquashfs(t, out)
	spec, err := appspec.Parse(readFile(t, fs, "app.json"))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name != "demo" || spec.Version != "1.1.0" || spec.Command != "/bin/demo" || spec.Env["PORT"] != "8080" ||
		spec.Health.HTTP == nil || spec.Health.HTTP.Path != "/healthz" || spec.Health.HTTP.Port != 8080 {
		t.Errorf("app.json %+v", spec)
	}
	bin := readFile(t, fs, "bin/demo")
	if st, _ := os.Stat(out); st.Size()%4096 != 0 || st.Size() > int64(len(bin))+1<<20 {
		t.Errorf("the image is %d bytes for a binary of %d", st.Size(), len(bin))
	}
	cached, _ := filepath.Glob(filepath.Join(cache, "demo-1.1.0-*"))
	if len(cached) != 1 {
		t.Fatalf("cache holds %v", cached)
	}
	want, _ := os.ReadFile(cached[0])
	if !bytes.Equal(bin, want) || !bytes.HasPrefix(bin, []byte("\x7fELF")) {
		t.Errorf("bin/demo is %d bytes, not the built binary (%d)", len(bin), len(want))
	}
	if !bytes.Contains(bin, []byte("1.1.0")) {
		t.Error("the version is not linked in")
	}
	if m := mode(t, fs, "bin", "demo"); m != 0o755 {
		t.Errorf("bin/demo mode %v", m)
	}
	// The cached binary is used again, unchanged.
	st, _ := os.Stat(cached[0])
	if err := DemoCached(filepath.Join(dir, "again.squashfs"), "1.1.0", cache); err != nil {
		t.Fatal(err)
	}
	if st2, _ := os.Stat(cached[0]); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("the cached binary was rebuilt")
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "diskfs_squashfs*", "bin", "demo")); len(left) > 0 {
		t.Errorf("workspaces left behind: %v", left)
	}

	// The kernel's tools agree: root and files owned by root, the root
	// folder open to the app's user.
	if _, err := exec.LookPath("unsquashfs"); err != nil {
		t.Skip("unsquashfs not installed; the image was checked with go-diskfs only")
	}
	ls, err := exec.Command("unsquashfs", "-lln", out).CombinedOutput()
	if err != nil {
		t.Fatalf("unsquashfs: %v\n%s", err, ls)
	}
	for _, want := range []string{"drwxr-xr-x 0/0", "-rwxr-xr-x 0/0", "squashfs-root/bin/demo", "-rw-r--r-- 0/0"} {
		if !strings.Contains(string(ls), want) {
			t.Errorf("unsquashfs -lln does not show %q:\n%s", want, ls)
		}
	}
}

func TestBrokenDemoIsLinkedBroken(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"2.0.0", BrokenDemoVersion} {
		if err := BuildDemo(filepath.Join(dir, v), v); err != nil {
			t.Fatal(err)
		}
	}
	// The demo refuses root, so look at what the linker set rather than
	// run it: the broken build has main.broken = "1".
	ok, _ := os.ReadFile(filepath.Join(dir, "2.0.0"))
	bad, _ := os.ReadFile(filepath.Join(dir, BrokenDemoVersion))
	if bytes.Contains(ok, []byte(BrokenDemoVersion)) || !bytes.Contains(bad, []byte(BrokenDemoVersion)) {
		t.Error("versions are not linked in")
	}
}

func TestBuildChecks(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "run")
	data := filepath.Join(dir, "data.txt")
	os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	os.WriteFile(data, []byte("hello"), 0o644)
	spec := appspec.Spec{Name: "x", Version: "1.0.0", Command: "/bin/run", Health: appspec.Health{Command: []string{"/bin/run", "check"}}}
	out := filepath.Join(dir, "x.squashfs")
	if err := Build(out, spec, map[string]string{"/bin/run": exe, "share/x/data.txt": data}); err != nil {
		t.Fatal(err)
	}
	fs := openSquashfs(t, out)
	if got := readFile(t, fs, "share/x/data.txt"); string(got) != "hello" {
		t.Errorf("data.txt %q", got)
	}
	if m := mode(t, fs, "share/x", "data.txt"); m != 0o644 {
		t.Errorf("data.txt mode %v", m)
	}
	for _, c := range []struct {
		spec  appspec.Spec
		files map[string]string
		want  string
	}{
		{spec, map[string]string{"/bin/other": exe}, "/bin/run of app.json is not among"},
		{spec, map[string]string{"/bin/run": data}, "is not executable"},
		{spec, map[string]string{"/bin/run": exe, "/app.json": data}, "cannot be a file"},
		{spec, map[string]string{"/bin/run": filepath.Join(dir, "missing")}, "no such file"},
		{appspec.Spec{Name: "x"}, nil, "version"},
	} {
		err := Build(filepath.Join(dir, "bad.squashfs"), c.spec, c.files)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.squashfs")); err == nil {
		t.Error("a failed build left an image")
	}
}

func mode(t *testing.T, fs *squashfs.FileSystem, dir, name string) os.FileMode {
	t.Helper()
	ents, err := fs.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == name {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			return fi.Mode().Perm()
		}
	}
	t.Fatalf("%s/%s not found", dir, name)
	return 0
}
