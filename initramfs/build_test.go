package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/u-root/mkuimage/cpio"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestMissingKernelNamesMakeDeps(t *testing.T) {
	_, err := build(context.Background(), config{
		kernelDir: filepath.Join(t.TempDir(), "kernel"),
		agent:     "keel.dev/keel/agent",
		output:    filepath.Join(t.TempDir(), "out.cpio.lz4"),
		log:       discard(),
	})
	if err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("build without a kernel = %v, want an error naming make deps", err)
	}
}

func TestExtraFiles(t *testing.T) {
	src := filepath.Join(t.TempDir(), "key.pub")
	if err := os.WriteFile(src, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := extraFiles([]string{src + ":/etc/keel/keys/key.pub", src + ":etc/x"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{src + ":etc/keel/keys/key.pub", src + ":etc/x"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("extraFiles = %v, want %v", got, want)
	}
	if _, err := extraFiles([]string{"/nonexistent:etc/x"}); err == nil {
		t.Error("extraFiles accepted a missing source")
	}
	if _, err := extraFiles([]string{src + ":/"}); err == nil {
		t.Error("extraFiles accepted an empty destination")
	}
}

func TestCheckStaticRefusesDynamicBinaries(t *testing.T) {
	// /bin/true on the build host is dynamically linked.
	if err := checkStatic("/bin/true"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("checkStatic(/bin/true) = %v", err)
	}
}

// TestBuild builds a whole initramfs around a stand-in agent and checks its
// layout. The first run builds the u-root busybox (half a minute); later
// runs take it from build/cache.
func TestBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go binaries")
	}
	kernel := "../build/kernel"
	if _, err := os.Stat(filepath.Join(kernel, "version")); err != nil {
		t.Skip("no build/kernel; run `make deps`")
	}
	dir := t.TempDir()
	agentSrc := filepath.Join(dir, "agent", "main.go")
	os.MkdirAll(filepath.Dir(agentSrc), 0o755)
	os.WriteFile(agentSrc, []byte("package main\nfunc main() {}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "agent", "go.mod"), []byte("module stand.in/agent\n"), 0o644)
	agent := filepath.Join(dir, "agent.bin")
	cmd := exec.Command("go", "build", "-o", agent, ".")
	cmd.Dir = filepath.Dir(agentSrc)
	cmd.Env = append(os.Environ(), goEnv()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build stand-in agent: %v\n%s", err, out)
	}

	out := filepath.Join(dir, "initramfs.cpio.lz4")
	rep, err := build(context.Background(), config{
		kernelDir: kernel, agent: agent, output: out, cacheDir: "../build/cache", log: discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.compressed > sizeGoal || rep.compressed == 0 {
		t.Errorf("compressed size %d, goal %d", rep.compressed, sizeGoal)
	}

	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr := lz4.NewReader(f)
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	byName := make(map[string]cpio.Record)
	for _, r := range recs {
		byName[r.Name] = r
	}
	release := strings.TrimSpace(string(must(os.ReadFile(filepath.Join(kernel, "version")))))
	for _, name := range []string{
		"bin/agent", "bbin/bb", "bbin/ip", "bbin/dmesg", "dev/console", "etc/keel/kernel-release",
		"etc/ssl/certs/ca-certificates.crt", // the public CA roots for https update servers
		"lib/modules/" + release + "/modules.dep",
		"lib/modules/" + release + "/modules.alias",
		"lib/modules/" + release + "/kernel/drivers/block/virtio_blk.ko",
		"lib/modules/" + release + "/kernel/fs/ext4/ext4.ko",
	} {
		if _, ok := byName[name]; !ok {
			t.Errorf("initramfs lacks %s", name)
		}
	}
	init, ok := byName["init"]
	if !ok || init.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Fatalf("init is not a symlink: %+v", init.Info)
	}
	if target := string(must(io.ReadAll(io.NewSectionReader(init, 0, int64(init.FileSize))))); target != "bin/agent" {
		t.Errorf("init -> %q, want bin/agent", target)
	}
	// /bin/hwtest is the agent under another name.
	for name, target := range map[string]string{"bin/hwtest": "agent"} {
		if l, ok := byName[name]; !ok || l.Mode&cpio.S_IFMT != cpio.S_IFLNK ||
			string(must(io.ReadAll(io.NewSectionReader(l, 0, int64(l.FileSize))))) != target {
			t.Errorf("%s is not a link to the agent (%s): %+v", name, target, l.Info)
		}
	}
	// The kernel would start /sbin/modprobe for its initcalls' module
	// requests (0.35 s of an emulated boot); PID 1 makes the link.
	if _, ok := byName["sbin/modprobe"]; ok {
		t.Error("initramfs has sbin/modprobe: the kernel would run the agent during its initcalls")
	}
	for _, name := range []string{"bin/sh", "bin/uinit", "bbin/init", "bbin/gosh"} {
		if _, ok := byName[name]; ok {
			t.Errorf("initramfs has %s: no shell and no u-root init belong in it", name)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
