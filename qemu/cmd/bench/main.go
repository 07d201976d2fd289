// Command bench measures keel's boot, build and memory figures, each beside
// a baseline measured in the same run (`make bench`).
//
// Boot (boot.go, issue 17): the agent's ready uptime against the same
// kernel, command line, firmware and disk booted directly on a tiny init
// that prints its uptime and powers off; QEMU start to the first /healthz
// against the same image through OVMF and GRUB with that init in slot a;
// first and later boots, alternating with the floors; a timeline of the
// last boot.
// Build: image build time with a cold and a warm Go build cache; sizes of the
// initramfs, the base squashfs and the image. Memory: the agent's resident
// memory when idle after boot, against the floor init's.
//
// Install (install.go, issue 3), on a bench image with 1 GiB+ base slots:
// throughput of a 200 MiB base package uploaded over the API against u-root
// dd writing as many bytes (bs=1M, then fsync) to the same partition from a
// direct-boot initramfs whose /init is ddinit; the agent's peak RSS during
// installs of 200 MiB and 1 GiB against its idle RSS; wall time from the
// install request of a real base 1.1.0 to its committed trial boot against
// a plain reboot. Packages are signed with -vendor-key.
//
// Flags besides the paths: -runs (boots per boot figure, at least 5),
// -skip-cold (no cold-cache build), -only boot|install|apps|backup|reset (one
// part alone), -initcall-debug (the slowest initcalls),
// -vendor-key FILE (default build/keys/vendor.key, or $KEEL_VENDOR_KEY).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
)

func main() {
	image := flag.String("image", envOr("KEEL_IMAGE", "build/keel.img"), "built image")
	kernelDir := flag.String("kernel-dir", envOr("KEEL_KERNEL_DIR", "build/kernel"), "unpacked kernel")
	initramfs := flag.String("initramfs", envOr("KEEL_INITRAMFS", "build/initramfs.cpio.lz4"), "built initramfs")
	runs := flag.Int("runs", 5, "boots per boot figure, at least 5 (the median and the range are printed)")
	skipCold := flag.Bool("skip-cold", false, "skip the cold-cache build (it takes minutes)")
	vendorKey := flag.String("vendor-key", envOr("KEEL_VENDOR_KEY", "build/keys/vendor.key"), "vendor signing key the image trusts (install figures)")
	only := flag.String("only", "", `run only these figures: "boot", "install", "apps", "backup", "reset" or "failover"`)
	cpuProfile := flag.String("cpuprofile", "", "boot figures: one more image booted twice with keel.cpuprofile=1; the agent's CPU profile of the later boot (PID 1 to ready) is written to this file and its top printed, the first boot's to FILE.first")
	cpuModel := flag.String("cpu-model", qemu.DefaultCPUModel, "emulated CPU of every VM booted (QEMU's -cpu under TCG), floors and agent alike")
	cpus := flag.Int("cpus", 1, "boot and install figures: virtual CPUs of every VM booted for them (floors and agent alike)")
	initcallDebug := flag.Bool("initcall-debug", false, "boot figures: one more boot with initcall_debug, listing the slowest initcalls")
	flag.Parse()
	if !slices.Contains([]string{"", "boot", "install", "apps", "backup", "reset", "failover"}, *only) {
		fmt.Fprintf(os.Stderr, "bench: -only %q: want boot, install, apps, backup, reset or failover\n", *only)
		os.Exit(2)
	}
	b := &bench{image: *image, kernelDir: *kernelDir, initramfs: *initramfs, runs: *runs, vendorKey: *vendorKey, only: *only, initcallDebug: *initcallDebug, cpus: *cpus, cpuModel: *cpuModel, cpuProfile: *cpuProfile}
	if err := b.run(*skipCold); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	image, kernelDir, initramfs string
	runs                        int
	work                        string
	vendorKey                   string
	only                        string // "" (all), "boot", "install", "apps", "backup", "reset" or "failover"
	initcallDebug               bool
	cpus                        int    // the boot and install figures' virtual CPUs, floors and agent alike
	cpuModel                    string // every VM's emulated CPU
	cpuProfile                  string // boot figures: write the agent's CPU profile of a boot here
}

func (b *bench) run(skipCold bool) error {
	var err error
	if b.work, err = os.MkdirTemp("", "keel-bench"); err != nil {
		return err
	}
	defer os.RemoveAll(b.work)
	fmt.Printf("%-44s %12s %12s %8s  %s\n", "figure", "value", "baseline", "ratio", "goal")
	switch b.only {
	case "install":
		return b.installFigures()
	case "apps":
		return b.appFigures()
	case "backup":
		return b.backupFigures()
	case "reset":
		return b.resetFigures()
	case "boot":
		return b.bootFigures()
	case "failover":
		return b.failoverFigures()
	}

	if err := b.bootFigures(); err != nil {
		return fmt.Errorf("boot figures: %w", err)
	}

	warm, err := b.build("")
	if err != nil {
		return fmt.Errorf("warm build: %w", err)
	}
	if !skipCold {
		cold, err := b.build(filepath.Join(b.work, "gocache"))
		if err != nil {
			return fmt.Errorf("cold build: %w", err)
		}
		row("build: initramfs+image, cold Go cache (s)", cold, warm, "(baseline: warm cache)")
	}
	row("build: initramfs+image, warm Go cache (s)", warm, warm, "")

	initrd := mib(size(b.initramfs))
	row("size: initramfs, lz4 (MiB)", initrd, 25, "<= 25 MiB")
	squash := filepath.Join(b.work, "base.squashfs")
	if err := squashOf(b.image, squash); err == nil {
		row("size: base slot squashfs (MiB)", mib(size(squash)), float64(layout.DefaultSizes.Base)/layout.MiB, "fits the 256 MiB slot")
	}
	row("size: image, allocated raw (MiB)", mib(allocated(b.image)), mib(size(b.image)), "(baseline: raw image size)")
	if q := strings.TrimSuffix(b.image, ".img") + ".qcow2"; size(q) > 0 {
		row("size: image, qcow2 (MiB)", mib(size(q)), mib(size(b.image)), "(baseline: raw image size)")
	}
	if err := b.installFigures(); err != nil {
		return fmt.Errorf("install figures: %w", err)
	}
	if err := b.appFigures(); err != nil {
		return fmt.Errorf("app figures: %w", err)
	}
	if err := b.backupFigures(); err != nil {
		return fmt.Errorf("backup figures: %w", err)
	}
	if err := b.resetFigures(); err != nil {
		return fmt.Errorf("reset figures: %w", err)
	}
	if err := b.failoverFigures(); err != nil {
		return fmt.Errorf("failover figures: %w", err)
	}
	return nil
}

func row(name string, v, base float64, goal string) {
	ratio := "-"
	if base > 0 {
		ratio = fmt.Sprintf("%.2f", v/base)
	}
	fmt.Printf("%-44s %12.2f %12.2f %8s  %s\n", name, v, base, ratio, goal)
}

func readyUptime(vm *qemu.VM) (float64, error) {
	m, err := vm.Expect(`keel: ready: .* uptime ([0-9.]+)s`, 3*time.Minute)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(m[1], 64)
}

func password(vm *qemu.VM) string {
	if m := regexp.MustCompile(`initial admin password: (\S+)`).FindStringSubmatch(vm.Output()); m != nil {
		return m[1]
	}
	return os.Getenv("KEEL_ADMIN_PASSWORD")
}

// ownPassword changes the admin password pw (the first-boot one opens
// nothing but its own change) to benchPassword.
func ownPassword(client *http.Client, url, pw string) (string, error) {
	if pw == benchPassword {
		return pw, nil
	}
	body := fmt.Sprintf(`{"current":%q,"new":%q}`, pw, benchPassword)
	req, _ := http.NewRequest("POST", url+"/api/v1/users/admin/password", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("admin", pw)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("change the first-boot password: %s (set KEEL_ADMIN_PASSWORD to the image's password)", resp.Status)
	}
	return benchPassword, nil
}

func agentRSS(client *http.Client, url, pw string) (float64, error) {
	req, _ := http.NewRequest("GET", url+"/api/v1/status", nil)
	req.SetBasicAuth("admin", pw)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		Agent struct {
			RSSBytes float64 `json:"rss_bytes"`
		} `json:"agent"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
		return 0, fmt.Errorf("status: %d %v (set KEEL_ADMIN_PASSWORD to the image's password)", resp.StatusCode, err)
	}
	return st.Agent.RSSBytes / (1 << 20), nil
}

// build times `make initramfs image` equivalents into the work folder; a
// non-empty gocache makes it cold (and skips the busybox cache).
func (b *bench) build(gocache string) (float64, error) {
	out := filepath.Join(b.work, "build")
	os.MkdirAll(out, 0o755)
	env := append(os.Environ(), "GOAMD64=v1")
	cacheArgs := []string{}
	if gocache != "" {
		env = append(env, "GOCACHE="+gocache)
		cacheArgs = []string{"-cache", ""}
	}
	start := time.Now()
	steps := [][]string{
		append([]string{"go", "run", "./initramfs", "-kernel", b.kernelDir, "-o", filepath.Join(out, "initramfs.cpio.lz4")}, cacheArgs...),
		{"go", "run", "./image", "build", "-kernel-dir", b.kernelDir, "-initramfs", filepath.Join(out, "initramfs.cpio.lz4"), "-o", filepath.Join(out, "keel.img")},
	}
	for _, s := range steps {
		cmd := exec.Command(s[0], s[1:]...)
		cmd.Env = env
		if o, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, o)
		}
	}
	return time.Since(start).Seconds(), nil
}

func squashOf(img, out string) error {
	data, err := diskimage.ReadPartition(img, layout.BaseA)
	if err != nil {
		return err
	}
	return os.WriteFile(out, data, 0o644)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func size(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

func allocated(p string) int64 {
	out, err := exec.Command("du", "-B1", p).Output()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	return n
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// start boots c with the bench's CPU model, so that floors and measured
// boots always run on the same emulated CPU.
func (b *bench) start(c qemu.Config) (*qemu.VM, error) {
	c.CPUModel = b.cpuModel
	return qemu.Start(context.Background(), c)
}
