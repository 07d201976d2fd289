package main

import (
	"context"
	"encoding/base64"
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
	"keel.dev/keel/image/grub"
	"keel.dev/keel/qemu"
	"keel.dev/keel/qemu/tinyinitrd"
)

// The boot figures (issue 17), each against a floor that differs from the
// measured boot only in its init:
//
//   - kernel floor: the same kernel and command line (every console=),
//     through OVMF, with the image attached, booted directly with an
//     initramfs whose init prints its uptime and powers off;
//   - wall floor: the same image and QEMU setup, through OVMF and GRUB,
//     with slot a's initramfs replaced by that init; QEMU start to its
//     line on the host clock;
//   - wall value: QEMU start to the first /healthz answer, polled every
//     100 ms with a short timeout per attempt.
//
// Floor and agent boots alternate, so a machine that slows down during the
// run slows both.

// floorCmdline is the command line GRUB gives a committed slot a, without
// the ESP's GUID (which only a disk boot knows).
const floorCmdline = "keel.slot=a keel.mode=good keel.tries=0 keel.bootenv=primary " + grub.Cmdline

var (
	reFloor    = regexp.MustCompile(`FLOOR uptime=([0-9.]+) rss="([0-9]+) kB"`)
	reReady    = regexp.MustCompile(`keel: ready: .* uptime ([0-9.]+)s`)
	reBootDone = regexp.MustCompile(`msg="boot done" uptime=[0-9.]+s cpu_idle=([0-9.]+)s cpu_iowait=([0-9.]+)s cpus=([0-9]+)`)
	reProfile  = regexp.MustCompile(`(?s)keel: boot cpu profile begin\r?\n(.*?)keel: boot cpu profile end`)
	reGRUB     = regexp.MustCompile(`Welcome to GRUB!`)
	reBooting  = regexp.MustCompile(`keel: booting slot`)
	reRunInit  = regexp.MustCompile(`\[\s*([0-9.]+)\] Run /init as init process`)
	reAgent    = regexp.MustCompile(`keel: booting\n`)
	rePhase    = regexp.MustCompile(`msg="boot phase done" phase=("[^"]+"|\S+) at=(\S+) took=(\S+)`)
	reInitcall = regexp.MustCompile(`initcall (\S+) returned \S+ after ([0-9]+) usecs`)
)

// series is one figure's samples.
type series []float64

func (s series) median() float64 { return median(s) }

// spread says the range and count, for the goal column.
func (s series) spread() string {
	if len(s) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("%.2f-%.2f, n=%d", slices.Min(s), slices.Max(s), len(s))
}

type bootRun struct {
	firstUp, laterUp     float64 // kernel uptime at agent ready
	firstWall, laterWall float64 // QEMU start to /healthz
	timeline             []string
	rssMiB               float64
}

func (b *bench) bootFigures() error {
	bin := filepath.Join(b.work, "floorinit")
	if err := tinyinitrd.Build(".", "./qemu/cmd/bench/floorinit", bin); err != nil {
		return err
	}
	floorInitrd := filepath.Join(b.work, "floor.cpio.zst")
	if err := tinyinitrd.Write(floorInitrd, bin); err != nil {
		return err
	}
	// The wall floor's image: the built image's layout and GRUB, slot a
	// holding the tiny init.
	floorImg := filepath.Join(b.work, "floor.img")
	rel, err := b.kernelRelease()
	if err != nil {
		return err
	}
	if err := diskimage.Build(context.Background(), diskimage.Options{
		Out: floorImg, Kernel: filepath.Join(b.kernelDir, "vmlinuz"), KernelRelease: rel, Initramfs: floorInitrd,
		Version: "1.0.0", GrubTimeout: 1, BuildTime: time.Now(),
	}); err != nil {
		return fmt.Errorf("floor image: %w", err)
	}

	runs := max(b.runs, 5)
	var kFloor, wFloor, fRSS, firstUp, laterUp, firstWall, laterWall, rss series
	var last bootRun
	for i := range runs {
		up, kb, err := b.kernelFloor(floorInitrd, i)
		if err != nil {
			return fmt.Errorf("kernel floor: %w", err)
		}
		kFloor, fRSS = append(kFloor, up), append(fRSS, kb)
		w, err := b.wallFloor(floorImg, i)
		if err != nil {
			return fmt.Errorf("wall floor: %w", err)
		}
		wFloor = append(wFloor, w)
		r, err := b.agentBoots(i, i == runs-1)
		if err != nil {
			return fmt.Errorf("agent boot: %w", err)
		}
		firstUp, laterUp = append(firstUp, r.firstUp), append(laterUp, r.laterUp)
		firstWall, laterWall = append(firstWall, r.firstWall), append(laterWall, r.laterWall)
		if r.rssMiB > 0 {
			rss = append(rss, r.rssMiB)
		}
		last = r
		say("boot run %d/%d: kernel floor %.2f s, wall floor %.2f s, agent ready %.2f/%.2f s, /healthz %.2f/%.2f s (first/later)",
			i+1, runs, up, w, r.firstUp, r.laterUp, r.firstWall, r.laterWall)
	}
	row("boot: kernel uptime at agent ready (s)", laterUp.median(), kFloor.median(),
		fmt.Sprintf("<= 1.5x the kernel floor; agent %s, floor %s", laterUp.spread(), kFloor.spread()))
	row("boot: the same, first boot (s)", firstUp.median(), kFloor.median(),
		fmt.Sprintf("<= 1.7x; agent %s", firstUp.spread()))
	row("boot: QEMU start to /healthz (s)", laterWall.median(), wFloor.median(),
		fmt.Sprintf("<= 1.25x the wall floor (OVMF+GRUB, tiny init); agent %s, floor %s", laterWall.spread(), wFloor.spread()))
	row("boot: the same, first boot (s)", firstWall.median(), wFloor.median(), fmt.Sprintf("agent %s", firstWall.spread()))
	row("memory: agent RSS idle after boot (MiB)", rss.median(), fRSS.median(), "<= 40 MiB (baseline: minimal Go init)")
	fmt.Println("boot timeline (later boot of the last run; seconds from QEMU start, host clock):")
	for _, l := range last.timeline {
		fmt.Println("  " + l)
	}
	if b.initcallDebug {
		ic, err := b.initcalls()
		if err != nil {
			return fmt.Errorf("initcall_debug boot: %w", err)
		}
		fmt.Println("slowest initcalls (initcall_debug boot of the image):")
		for _, l := range ic {
			fmt.Println("  " + l)
		}
	}
	if b.cpuProfile != "" {
		if err := b.bootProfile(); err != nil {
			return fmt.Errorf("profiled boot: %w", err)
		}
	}
	return nil
}

// bootProfile boots an image whose GRUB adds keel.cpuprofile=1 twice and
// writes the agent's CPU profiles, from PID 1's start to ready, of the
// later boot to b.cpuProfile and of the first boot (which makes keys, the
// password hash and the application's data volume) to b.cpuProfile +
// ".first", and prints the later boot's top functions.
func (b *bench) bootProfile() error {
	img := filepath.Join(b.work, "profile.img")
	if err := b.buildImage(img, diskimage.Options{GrubTimeout: 1, KernelArgs: "keel.cpuprofile=1"}); err != nil {
		return err
	}
	vm, err := b.start(qemu.Config{Image: img, CPUs: b.cpus, WorkDir: filepath.Join(b.work, "profile")})
	if err != nil {
		return err
	}
	defer vm.Close()
	if err := saveProfile(vm, b.cpuProfile+".first"); err != nil {
		return err
	}
	vm.PowerButton()
	vm.Wait(time.Minute)
	vm2, err := vm.Restart(context.Background())
	if err != nil {
		return err
	}
	defer vm2.Close()
	if err := saveProfile(vm2, b.cpuProfile); err != nil {
		return err
	}
	vm2.PowerButton()
	vm2.Wait(time.Minute)
	top, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", b.cpuProfile).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %v: %s", err, top)
	}
	fmt.Printf("agent CPU profile of a later boot, PID 1 to ready (%s; go tool pprof %s; the first boot's: %s.first):\n%s", b.cpuProfile, b.cpuProfile, b.cpuProfile, top)
	return nil
}

// saveProfile waits for the profile the agent prints on vm's console and
// writes it to file.
func saveProfile(vm *qemu.VM, file string) error {
	m, err := vm.Expect(reProfile.String(), 3*time.Minute)
	if err != nil {
		return err
	}
	prof, err := base64.StdEncoding.DecodeString(profileText(m[1]))
	if err != nil {
		return fmt.Errorf("the profile on the console: %w", err)
	}
	return os.WriteFile(file, prof, 0o644)
}

// reKernelLine is a kernel message on the serial console: the kernel
// writes it at any moment, also in the middle of a line of the agent's.
var reKernelLine = regexp.MustCompile(`\[ *[0-9]+\.[0-9]+\] [^\r\n]*\r?\n`)

// profileText takes the base64 of the agent's profile out of the console
// between its markers: the kernel's messages and the agent's log lines
// that came meanwhile are not part of it.
func profileText(console string) string {
	var b strings.Builder
	for _, line := range strings.Split(reKernelLine.ReplaceAllString(console, ""), "\n") {
		if line = strings.TrimSpace(line); !strings.Contains(line, " ") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// kernelFloor boots the kernel directly, through OVMF with the image
// attached, on the tiny init; its uptime and resident memory.
func (b *bench) kernelFloor(initrd string, i int) (uptime, rssMiB float64, err error) {
	vm, err := b.start(qemu.Config{
		Image: b.image, Kernel: filepath.Join(b.kernelDir, "vmlinuz"), Initrd: initrd, Append: floorCmdline,
		NoReboot: true, CPUs: b.cpus, WorkDir: filepath.Join(b.work, fmt.Sprintf("kfloor%d", i)),
	})
	if err != nil {
		return 0, 0, err
	}
	defer vm.Close()
	m, err := vm.Expect(reFloor.String(), 3*time.Minute)
	vm.Wait(time.Minute)
	if err != nil {
		return 0, 0, err
	}
	up, _ := strconv.ParseFloat(m[1], 64)
	kb, _ := strconv.ParseFloat(m[2], 64)
	return up, kb / 1024, nil
}

// wallFloor boots the floor image through OVMF and GRUB: QEMU start to the
// tiny init's line.
func (b *bench) wallFloor(img string, i int) (float64, error) {
	vm, err := b.start(qemu.Config{
		Image: img, NoReboot: true, CPUs: b.cpus, WorkDir: filepath.Join(b.work, fmt.Sprintf("wfloor%d", i)),
	})
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	if _, err := vm.Expect(reFloor.String(), 3*time.Minute); err != nil {
		return 0, err
	}
	at, _, _ := vm.SeenAt(reFloor)
	vm.Wait(time.Minute)
	return at.Sub(vm.Started()).Seconds(), nil
}

// agentBoots boots the image fresh (first boot: keys, credentials) and
// again (what every later boot costs). With idle it also reads the agent's
// idle memory after the later boot, and the timeline.
func (b *bench) agentBoots(i int, idle bool) (bootRun, error) {
	var r bootRun
	vm, err := b.start(qemu.Config{Image: b.image, CPUs: b.cpus, WorkDir: filepath.Join(b.work, fmt.Sprintf("agent%d", i))})
	if err != nil {
		return r, err
	}
	hz, err := healthz(vm, 3*time.Minute)
	if err != nil {
		vm.Close()
		return r, err
	}
	r.firstWall = hz.Sub(vm.Started()).Seconds()
	if r.firstUp, err = readyUptime(vm); err != nil {
		vm.Close()
		return r, err
	}
	// The first password change hashes with the box's full work factor:
	// seconds under TCG.
	client := vmClient(time.Minute, true)
	url := fmt.Sprintf("https://127.0.0.1:%d", vm.HTTPSPort())
	pw, err := ownPassword(client, url, password(vm))
	if err != nil {
		vm.Close()
		return r, err
	}
	vm.PowerButton()
	vm.Wait(time.Minute)
	vm2, err := vm.Restart(context.Background())
	if err != nil {
		return r, err
	}
	defer vm2.Close()
	if hz, err = healthz(vm2, 3*time.Minute); err != nil {
		return r, err
	}
	r.laterWall = hz.Sub(vm2.Started()).Seconds()
	if r.laterUp, err = readyUptime(vm2); err != nil {
		return r, err
	}
	if idle {
		r.timeline = timeline(vm2, hz)
		// Idle: one request so the password check is cached, then let
		// boot-time work (DHCP, hotplug rescans, that check) settle.
		agentRSS(client, url, pw)
		time.Sleep(10 * time.Second)
		if r.rssMiB, err = agentRSS(client, url, pw); err != nil {
			return r, err
		}
	}
	vm2.PowerButton()
	vm2.Wait(time.Minute)
	return r, nil
}

// healthz polls /healthz every 100 ms, each attempt with a short timeout
// (a long one would hide the moment the port starts answering), and
// returns when the first answer came.
func healthz(vm *qemu.VM, timeout time.Duration) (time.Time, error) {
	client := vmClient(400*time.Millisecond, false)
	url := fmt.Sprintf("https://127.0.0.1:%d/healthz", vm.HTTPSPort())
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		next := time.Now().Add(100 * time.Millisecond)
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Now(), nil
			}
		}
		select {
		case <-vm.Exited():
			return time.Time{}, fmt.Errorf("QEMU exited before /healthz answered: %s", vm.Stderr())
		case <-time.After(time.Until(next)):
		}
	}
	return time.Time{}, fmt.Errorf("no /healthz answer within %v", timeout)
}

// timeline lays a boot's console out on the host clock: firmware, GRUB,
// loading and unpacking the kernel, the kernel to /init, each agent phase
// (from the agent's own log), ready, and the first /healthz answer.
func timeline(vm *qemu.VM, hz time.Time) []string {
	t0 := vm.Started()
	at := func(re *regexp.Regexp) (float64, []string, bool) {
		t, m, ok := vm.SeenAt(re)
		return t.Sub(t0).Seconds(), m, ok
	}
	var out []string
	add := func(from, to float64, what string) {
		out = append(out, fmt.Sprintf("%6.2f %6.2f  %5.2f  %s", from, to, to-from, what))
	}
	out = append(out, "  from     to   took")
	grubAt, _, okG := at(reGRUB)
	bootAt, _, okB := at(reBooting)
	initAt, m, okI := at(reRunInit)
	if !okG || !okB || !okI {
		return append(out, "(the console lacks GRUB's or the kernel's lines)")
	}
	initUp, _ := strconv.ParseFloat(m[1], 64)
	kernel0 := initAt - initUp // the kernel's clock started here
	add(0, grubAt, "firmware (OVMF), to GRUB's greeting")
	add(grubAt, bootAt, "GRUB: its config and the hidden menu wait")
	add(bootAt, kernel0, "GRUB loads the kernel and initramfs; the kernel decompresses")
	add(kernel0, initAt, "kernel: to /init (unpacking the initramfs included)")
	if agentAt, _, ok := at(reAgent); ok {
		add(initAt, agentAt, "/init to the agent's first line")
		for _, p := range rePhase.FindAllStringSubmatch(vm.Output(), -1) {
			start, e1 := time.ParseDuration(p[2])
			took, e2 := time.ParseDuration(p[3])
			if e1 != nil || e2 != nil {
				continue
			}
			s := agentAt + start.Seconds()
			add(s, s+took.Seconds(), "agent phase "+strings.Trim(p[1], `"`))
		}
	}
	if readyAt, m, ok := at(reReady); ok {
		what := "kernel start to agent ready (uptime " + m[1] + " s)"
		if d := reBootDone.FindStringSubmatch(vm.Output()); d != nil {
			what += fmt.Sprintf("; the CPUs idle %s s of it, %s s of that waiting for I/O (%s CPUs)", d[1], d[2], d[3])
		}
		add(kernel0, readyAt, what)
	}
	add(0, hz.Sub(t0).Seconds(), "QEMU start to the first /healthz answer")
	return out
}

// initcalls boots an image whose GRUB adds initcall_debug (its lines are
// debug level: ignore_loglevel puts them on the console) and lists the ten
// slowest initcalls.
func (b *bench) initcalls() ([]string, error) {
	img := filepath.Join(b.work, "initcall.img")
	if err := b.buildImage(img, diskimage.Options{GrubTimeout: 1, KernelArgs: "initcall_debug ignore_loglevel"}); err != nil {
		return nil, err
	}
	vm, err := b.start(qemu.Config{Image: img, CPUs: b.cpus, WorkDir: filepath.Join(b.work, "initcall")})
	if err != nil {
		return nil, err
	}
	defer vm.Close()
	if _, err := vm.Expect(reReady.String(), 3*time.Minute); err != nil {
		return nil, err
	}
	type call struct {
		name string
		us   int
	}
	var calls []call
	for _, m := range reInitcall.FindAllStringSubmatch(vm.Output(), -1) {
		us, _ := strconv.Atoi(m[2])
		calls = append(calls, call{m[1], us})
	}
	slices.SortFunc(calls, func(a, b call) int { return b.us - a.us })
	var out []string
	for _, c := range calls[:min(10, len(calls))] {
		out = append(out, fmt.Sprintf("%8.3f s  %s", float64(c.us)/1e6, c.name))
	}
	vm.PowerButton()
	vm.Wait(time.Minute)
	return out, nil
}
