package main

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/gobusybox/src/pkg/golang"
	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/uio/llog"

	"keel.dev/keel/initramfs/kmods"
)

// sizeGoal is the compressed size the image layout budgets for the
// initramfs (a base slot also holds the kernel).
const sizeGoal = 25 << 20

type config struct {
	kernelDir string
	agent     string
	output    string
	files     []string
	binaries  []string
	cacheDir  string
	log       *slog.Logger
}

// report sums up what went into the initramfs.
type report struct {
	output       string
	release      string
	modules      int
	moduleBytes  int64
	agentBytes   int64
	busyboxBytes int64
	raw          int64
	compressed   int64
	took         time.Duration
}

func (r *report) print(w io.Writer) {
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	fmt.Fprintf(w, "initramfs %s (kernel %s)\n", r.output, r.release)
	fmt.Fprintf(w, "  agent            %s\n", mib(r.agentBytes))
	fmt.Fprintf(w, "  u-root busybox   %s (%d commands)\n", mib(r.busyboxBytes), len(urootCommands()))
	fmt.Fprintf(w, "  kernel modules   %s (%d modules)\n", mib(r.moduleBytes), r.modules)
	fmt.Fprintf(w, "  cpio             %s\n", mib(r.raw))
	fmt.Fprintf(w, "  lz4              %s (goal %s) in %s\n", mib(r.compressed), mib(sizeGoal), r.took.Round(100*time.Millisecond))
	if r.compressed > sizeGoal {
		fmt.Fprintf(w, "  WARNING: the initramfs is over its %s goal\n", mib(sizeGoal))
	}
}

// goEnv is the target of every Go binary in the initramfs: static (no libc
// in the initramfs), and GOAMD64=v1 so the image boots on any x86-64 CPU,
// old appliances and QEMU's default TCG CPU included.
func goEnv() []string {
	return []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1"}
}

func build(ctx context.Context, cfg config) (*report, error) {
	start := time.Now()
	rep := &report{output: cfg.output}

	tree, err := kmods.Open(cfg.kernelDir)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", cfg.kernelDir, err)
	}
	rep.release = tree.Release
	sel, err := tree.Closure(kmods.Wanted()...)
	if err != nil {
		return nil, fmt.Errorf("select modules: %w", err)
	}
	if len(sel.Unresolved) > 0 {
		cfg.log.Debug("soft dependencies without a module", "names", sel.Unresolved)
	}
	modFiles, err := tree.Files(sel)
	if err != nil {
		return nil, fmt.Errorf("module files: %w", err)
	}
	rep.modules = len(sel.Modules)
	for _, f := range modFiles {
		if strings.HasSuffix(f.Name, ".ko") {
			rep.moduleBytes += int64(len(f.Data))
		}
	}
	cfg.log.Debug("modules selected", "release", tree.Release, "modules", rep.modules, "scanned", tree.Len())

	tmp, err := os.MkdirTemp("", "keel-initramfs-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	agentBin, err := agentBinary(ctx, cfg, tmp)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(agentBin); err == nil {
		rep.agentBytes = fi.Size()
	}

	base, err := cpio.ArchiveFromRecords(baseRecords(tree.Release, modFiles))
	if err != nil {
		return nil, fmt.Errorf("base archive: %w", err)
	}
	extra, err := extraFiles(cfg.files)
	if err != nil {
		return nil, err
	}
	// The public CA roots (Debian's ca-certificates), where Go's crypto/x509
	// looks first, so an https update server is verified.
	if _, err := os.Stat(caBundle); err != nil {
		return nil, fmt.Errorf("CA roots: %w (install Debian's ca-certificates: make deps)", err)
	}
	extra = append(extra, caBundle+":"+strings.TrimPrefix(caBundle, "/"))
	if err := os.MkdirAll(filepath.Dir(cfg.output), 0o755); err != nil {
		return nil, err
	}
	// Written aside and renamed, so a failed build never leaves a
	// truncated initramfs where a VM would boot it.
	out := &lz4CPIO{path: cfg.output + ".tmp"}
	defer os.Remove(out.path)

	// gobusybox runs `go build` with os.Environ() plus its own GOOS/GOARCH/
	// CGO_ENABLED; GOAMD64 can only reach it through the process
	// environment.
	if err := os.Setenv("GOAMD64", "v1"); err != nil {
		return nil, err
	}
	bb := &cachedBusybox{dir: bbCacheDir(cfg.cacheDir), log: cfg.log}
	mods := []uimage.Modifier{
		uimage.WithReplaceEnv(golang.Default(golang.DisableCGO(), golang.WithGOOS("linux"), golang.WithGOARCH("amd64"))),
		uimage.WithTempDir(tmp),
		uimage.WithBaseArchive(base),
		uimage.WithCommands(nil, bb, urootCommands()...),
		// The agent is its own binary, not part of the busybox: it is
		// PID 1 and must not go through gobusybox's source rewriting,
		// and u-root's init is not used at all.
		uimage.WithFiles(agentBin + ":bin/agent"),
		uimage.WithInit("/bin/agent"),
		// Nothing added here is dynamically linked; ldd would only
		// read host libraries into the image.
		uimage.WithSkipLDD(),
		uimage.WithOutput(out),
	}
	if len(cfg.binaries) > 0 {
		mods = append(mods, uimage.WithBinaryCommandsOpts(&golang.BuildOpts{}, cfg.binaries...))
	}
	mods = append(mods, uimage.WithFiles(extra...))

	ulog := llog.New(slog.LevelWarn, func(format string, v ...any) { cfg.log.Info(fmt.Sprintf(format, v...)) })
	if cfg.log.Enabled(ctx, slog.LevelDebug) {
		ulog.Level = slog.LevelDebug
	}
	if err := uimage.Create(ulog, mods...); err != nil {
		return nil, fmt.Errorf("mkuimage: %w", err)
	}
	if err := os.Rename(out.path, cfg.output); err != nil {
		return nil, err
	}
	fi, err := os.Stat(cfg.output)
	if err != nil {
		return nil, err
	}
	rep.compressed = fi.Size()
	rep.busyboxBytes = bb.size
	rep.raw = out.raw
	rep.took = time.Since(start)
	return rep, nil
}

// bbCacheDir is where the busybox is cached under the -cache directory.
func bbCacheDir(cache string) string {
	if cache == "" {
		return ""
	}
	return filepath.Join(cache, "busybox")
}

// agentBinary returns the path of the agent executable: cfg.agent itself if
// it names a file, or else the package built into dir.
func agentBinary(ctx context.Context, cfg config, dir string) (string, error) {
	if fi, err := os.Stat(cfg.agent); err == nil && fi.Mode().IsRegular() {
		if err := checkStatic(cfg.agent); err != nil {
			return "", err
		}
		return cfg.agent, nil
	}
	bin := filepath.Join(dir, "agent")
	cfg.log.Debug("building agent", "package", cfg.agent)
	if err := goBuild(ctx, cfg.agent, bin); err != nil {
		return "", fmt.Errorf("build agent: %w", err)
	}
	return bin, nil
}

// goBuild builds one static binary for the box. Not through mkuimage's
// binary builder: that one forces -a and turns off inlining, fine for
// small tools, not for the agent that serves the API, and slow.
func goBuild(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, pkg)
	cmd.Env = append(os.Environ(), goEnv()...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return checkStatic(out)
}

// checkStatic refuses a dynamically linked binary: the initramfs has no
// dynamic loader (for /init the kernel would panic with "No working init
// found").
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: not an ELF executable: %w", p, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s: built for %v, want x86-64", p, f.Machine)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0", p)
		}
	}
	return nil
}

// caBundle is Debian's bundle of the public CA roots.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// extraFiles validates -files values and makes their destinations relative
// to the archive root, as mkuimage wants them.
func extraFiles(specs []string) ([]string, error) {
	var out []string
	for _, s := range specs {
		src, dst, ok := strings.Cut(s, ":")
		if !ok {
			dst = src
		}
		dst = strings.TrimLeft(filepath.Clean("/"+dst), "/")
		if src == "" || dst == "" {
			return nil, fmt.Errorf("-files %q: want src:dst", s)
		}
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("-files %q: %w", s, err)
		}
		out = append(out, src+":"+dst)
	}
	return out, nil
}
