package appimage

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
	// Other packages' tests build squashfs images at the same time; a
	// private temporary folder keeps their workspaces out of the count.
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
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

// The broken build's /healthz answers 500, the good one's 200.
func TestBrokenDemoFailsItsHealthCheck(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("the demo is built for linux/amd64")
	}
	// The demo refuses root: as root, run it as nobody, from a folder
	// nobody can reach (it only reads its data folder at start).
	dir, err := os.MkdirTemp("", "keel-demo-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[string]int{"2.0.0": 200, BrokenDemoVersion: 500} {
		bin := filepath.Join(dir, v)
		if err := BuildDemo(bin, v); err != nil {
			t.Fatal(err)
		}
		if got := demoHealth(t, bin, dir); got != want {
			t.Errorf("demo %s: /healthz answered %d, want %d", v, got, want)
		}
	}
}

// demoHealth runs the demo binary bin and returns the status of its
// /healthz.
func demoHealth(t *testing.T, bin, dataDir string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PORT=" + strconv.Itoa(port), "DATA_DIR=" + dataDir}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			cmd.Process.Kill()
			<-exited
			return resp.StatusCode
		}
		select {
		case werr := <-exited:
			t.Fatalf("the demo exited: %v\n%s", werr, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited // its output is complete
			t.Fatalf("GET %s: %v\n%s", url, err, out.String())
		}
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
