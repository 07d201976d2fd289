// Command bench measures keel's boot, build and memory figures, each beside
// a baseline measured in the same run (`make bench`).
//
// Boot: kernel uptime when the agent is ready (full UEFI + GRUB boot of the
// image) against the floor, the same kernel booting a minimal initramfs
// whose init powers off at once; wall time from QEMU start to /healthz.
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
// Flags besides the paths: -runs (boots per boot figure), -skip-cold (no
// cold-cache build), -only install|apps|reset (just the install, the app or the reset
// figures),
// -vendor-key FILE (default build/keys/vendor.key, or $KEEL_VENDOR_KEY).
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
	"keel.dev/keel/qemu/tinyinitrd"
)

func main() {
	image := flag.String("image", envOr("KEEL_IMAGE", "build/keel.img"), "built image")
	kernelDir := flag.String("kernel-dir", envOr("KEEL_KERNEL_DIR", "build/kernel"), "unpacked kernel")
	initramfs := flag.String("initramfs", envOr("KEEL_INITRAMFS", "build/initramfs.cpio.zst"), "built initramfs")
	runs := flag.Int("runs", 3, "boots per boot figure (the median is printed)")
	skipCold := flag.Bool("skip-cold", false, "skip the cold-cache build (it takes minutes)")
	vendorKey := flag.String("vendor-key", envOr("KEEL_VENDOR_KEY", "build/keys/vendor.key"), "vendor signing key the image trusts (install figures)")
	only := flag.String("only", "", `run only these figures: "install", "apps", "backup" or "reset"`)
	flag.Parse()
	if *only != "" && *only != "install" && *only != "apps" && *only != "backup" && *only != "reset" {
		fmt.Fprintf(os.Stderr, "bench: -only %q: want install, apps, backup or reset\n", *only)
		os.Exit(2)
	}
	b := &bench{image: *image, kernelDir: *kernelDir, initramfs: *initramfs, runs: *runs, vendorKey: *vendorKey, only: *only}
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
	only                        string // "" (all), "install", "apps", "backup" or "reset"
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
	}

	floorUp, floorRSS, err := b.floor()
	if err != nil {
		return fmt.Errorf("floor boot: %w", err)
	}
	first, later, healthz, agentRSS, err := b.agentBoot()
	if err != nil {
		return fmt.Errorf("agent boot: %w", err)
	}
	row("boot: kernel uptime at agent ready (s)", later, floorUp, "<= 1.5x the floor (minimal initramfs, init powers off)")
	row("boot: the same, first boot (s)", first, floorUp, "(first boot makes keys and credentials)")
	row("boot: QEMU start to /healthz, UEFI+GRUB (s)", healthz, floorUp, "(baseline: floor kernel uptime)")
	row("memory: agent RSS idle after boot (MiB)", agentRSS, floorRSS, "<= 40 MiB (baseline: minimal Go init)")

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
	row("size: initramfs, zstd (MiB)", initrd, 25, "<= 25 MiB")
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
	return nil
}

func row(name string, v, base float64, goal string) {
	ratio := "-"
	if base > 0 {
		ratio = fmt.Sprintf("%.2f", v/base)
	}
	fmt.Printf("%-44s %12.2f %12.2f %8s  %s\n", name, v, base, ratio, goal)
}

// floor boots the kernel directly with an initramfs holding only floorinit.
func (b *bench) floor() (uptime, rssMiB float64, err error) {
	bin := filepath.Join(b.work, "floorinit")
	if err := tinyinitrd.Build(".", "./qemu/cmd/bench/floorinit", bin); err != nil {
		return 0, 0, err
	}
	initrd := filepath.Join(b.work, "floor.cpio.zst")
	if err := tinyinitrd.Write(initrd, bin); err != nil {
		return 0, 0, err
	}
	var ups, rsss []float64
	for i := 0; i < b.runs; i++ {
		vm, err := qemu.Start(context.Background(), qemu.Config{
			Kernel: filepath.Join(b.kernelDir, "vmlinuz"), Initrd: initrd, Append: "console=ttyS0 panic=-1",
			BIOS: true, NoReboot: true, WorkDir: filepath.Join(b.work, fmt.Sprintf("floor%d", i)),
		})
		if err != nil {
			return 0, 0, err
		}
		m, err := vm.Expect(`FLOOR uptime=([0-9.]+) rss="([0-9]+) kB"`, 2*time.Minute)
		vm.Wait(time.Minute)
		vm.Close()
		if err != nil {
			return 0, 0, err
		}
		up, _ := strconv.ParseFloat(m[1], 64)
		kb, _ := strconv.ParseFloat(m[2], 64)
		ups, rsss = append(ups, up), append(rsss, kb/1024)
	}
	return median(ups), median(rsss), nil
}

// agentBoot boots the image twice (first boot creates keys and credentials;
// the second is what every later boot costs) and reads the agent's ready
// uptime, the wall time to /healthz, and its idle memory.
func (b *bench) agentBoot() (first, later, healthz, rssMiB float64, err error) {
	var firsts, laters, healths, rsss []float64
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for i := 0; i < b.runs; i++ {
		start := time.Now()
		vm, err := qemu.Start(context.Background(), qemu.Config{Image: b.image, WorkDir: filepath.Join(b.work, fmt.Sprintf("agent%d", i))})
		if err != nil {
			return 0, 0, 0, 0, err
		}
		url := fmt.Sprintf("https://127.0.0.1:%d", vm.HTTPSPort())
		var hz time.Duration
		for time.Since(start) < 3*time.Minute {
			if resp, err := client.Get(url + "/healthz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					hz = time.Since(start)
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		up1, err := readyUptime(vm)
		if err != nil || hz == 0 {
			vm.Close()
			return 0, 0, 0, 0, fmt.Errorf("the agent did not become ready: %v", err)
		}
		pw, err := ownPassword(client, url, password(vm))
		if err != nil {
			vm.Close()
			return 0, 0, 0, 0, err
		}
		vm.PowerButton()
		vm.Wait(time.Minute)
		vm2, err := vm.Restart(context.Background())
		if err != nil {
			return 0, 0, 0, 0, err
		}
		up2, err := readyUptime(vm2)
		if err != nil {
			vm2.Close()
			return 0, 0, 0, 0, err
		}
		// Idle: one request so the password check is cached, then let
		// boot-time work (DHCP, hotplug rescans, that check) settle.
		agentRSS(client, url, pw)
		time.Sleep(10 * time.Second)
		rss, err := agentRSS(client, url, pw)
		vm2.PowerButton()
		vm2.Wait(time.Minute)
		vm2.Close()
		if err != nil {
			return 0, 0, 0, 0, err
		}
		firsts, laters = append(firsts, up1), append(laters, up2)
		healths, rsss = append(healths, hz.Seconds()), append(rsss, rss)
	}
	return median(firsts), median(laters), median(healths), median(rsss), nil
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
		append([]string{"go", "run", "./initramfs", "-kernel", b.kernelDir, "-o", filepath.Join(out, "initramfs.cpio.zst")}, cacheArgs...),
		{"go", "run", "./image", "build", "-kernel-dir", b.kernelDir, "-initramfs", filepath.Join(out, "initramfs.cpio.zst"), "-o", filepath.Join(out, "keel.img")},
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
