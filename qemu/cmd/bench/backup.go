package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"keel.dev/keel/agent/backup"
	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/qemu"
	"keel.dev/keel/qemu/tinyinitrd"
)

const (
	// backupData is the data partition of the backup figures' image: the
	// app's volume (1 GiB used), the kept backup, the restore's staging
	// and the baseline's archive and copy fit.
	backupData = 8 << 30
	backupMiB  = 1024
	// backupPassword is the automatic backups' password, and the
	// baseline's (tarageinit has the same).
	backupPassword = "bench-backup-password"
)

// bulk is the demo app's answer about its bulk data.
type bulk struct {
	Files  int    `json:"files"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// backupFigures measures issue 14's backup and restore of 1 GiB of app
// data. One VM on an image with the demo app: the app writes 1 GiB of
// incompressible data into its volume; after a reboot (cold caches, as the
// baseline's fresh boot) the agent takes a backup kept on the box; the
// data is deleted and the backup restored from the box (staged, then put
// in place at the restart), and the data read back must be what was
// written. The agent's RSS is sampled while it backs up and stages. The
// baseline boots the same disk with tarageinit: tar | age of the same
// folder to the data partition, then age -d | tar -x of it.
func (b *bench) backupFigures() error {
	app := filepath.Join(b.work, "demo-backup.squashfs")
	if err := appimage.Demo(app, "1.0.0"); err != nil {
		return err
	}
	sizes := layout.DefaultSizes
	sizes.Data = backupData
	img := filepath.Join(b.work, "backup.img")
	say("building the backup bench image (8 GiB data partition, demo app)")
	if err := b.buildImage(img, diskimage.Options{Size: layout.MinDiskSize(sizes), Sizes: sizes, GrubTimeout: 1, AppPayload: app}); err != nil {
		return fmt.Errorf("backup image: %w", err)
	}
	appPort, err := freeTCP()
	if err != nil {
		return err
	}
	vm, err := b.start(qemu.Config{Image: img, WorkDir: filepath.Join(b.work, "backup-vm"),
		HostFwd: []string{fmt.Sprintf("tcp:127.0.0.1:%d-:%d", appPort, appimage.DemoPort)}})
	if err != nil {
		return err
	}
	defer vm.Close()
	if _, err := vm.Expect(`keel: ready`, benchTimeout); err != nil {
		return err
	}
	appURL := fmt.Sprintf("http://127.0.0.1:%d", appPort)
	poll := newPoller(appURL + "/healthz")
	defer poll.stop()
	if !poll.waitUp(2 * time.Minute) {
		return fmt.Errorf("the demo app never answered on its port")
	}
	box := newBox(vm)

	say("the app writes %d MiB into its data volume", backupMiB)
	made, err := appBulk("POST", appURL+"/bulk?mib="+strconv.Itoa(backupMiB))
	if err != nil {
		out := vm.Output()
		return fmt.Errorf("%w; the console's end:\n%s", err, out[max(0, len(out)-3000):])
	}
	settings := fmt.Sprintf(`{"password":%q,"keep":3,"daily":false}`, backupPassword)
	if code, body, err := box.do("PUT", "/api/v1/backup/settings", strings.NewReader(settings), time.Minute); err != nil || code != http.StatusOK {
		return fmt.Errorf("backup settings: %d %s %v", code, body, err)
	}
	if code, body, err := box.do("POST", "/api/v1/power/reboot", nil, time.Minute); err != nil || code != http.StatusAccepted {
		return fmt.Errorf("reboot: %d %s %v", code, body, err)
	}
	if _, err := vm.Expect(`keel: ready`, benchTimeout); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	if !poll.waitUp(2 * time.Minute) {
		return fmt.Errorf("the demo app did not answer after the reboot")
	}
	box.status()
	time.Sleep(5 * time.Second)
	idle, err := box.status()
	if err != nil {
		return err
	}

	say("backup kept on the box")
	var kept backup.Stored
	backupS, backupPeak, backupN, err := box.sampled(func() error {
		code, body, err := box.do("POST", "/api/v1/backups", nil, 30*time.Minute)
		if err != nil || code != http.StatusCreated {
			return fmt.Errorf("POST /api/v1/backups: %d %s %v", code, body, err)
		}
		return json.Unmarshal(body, &kept)
	})
	if err != nil {
		return err
	}
	if _, err := appBulk("DELETE", appURL+"/bulk"); err != nil {
		return err
	}
	// The memory's baseline: the same backup without the 1 GiB. Both
	// peaks are mostly scrypt's at work factor 18 (128 × r=8 × 2^18 bytes,
	// 256 MiB for about a second), which tar | age pays as well; flat
	// means the 1 GiB adds nothing to it.
	_, smallPeak, _, err := box.sampled(func() error {
		code, body, err := box.do("POST", "/api/v1/backups", nil, 10*time.Minute)
		if err != nil || code != http.StatusCreated {
			return fmt.Errorf("POST /api/v1/backups: %d %s %v", code, body, err)
		}
		return nil
	})
	if err != nil {
		return err
	}

	say("restore of %s (%d MiB; backup %.1f s, peak %.1f MiB)", kept.Name, kept.Size>>20, backupS, backupPeak)
	stageS, restorePeak, restoreN, err := box.sampled(func() error {
		code, body, err := box.do("POST", "/api/v1/restore?backup="+kept.Name, nil, 30*time.Minute)
		if err != nil || code != http.StatusAccepted {
			return fmt.Errorf("POST /api/v1/restore: %d %s %v", code, body, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := vm.Expect(`keel: restoring a backup`, benchTimeout); err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := vm.Expect(`keel: ready`, 20*time.Minute); err != nil {
		return err
	}
	if !poll.waitUp(20 * time.Minute) {
		return fmt.Errorf("the demo app did not answer after the restore")
	}
	applyS := time.Since(t0).Seconds()
	back, err := appBulk("GET", appURL+"/bulk")
	if err != nil {
		return err
	}
	if back != made {
		return fmt.Errorf("after the restore the app's bulk data is %+v, not the %+v it wrote", back, made)
	}
	vm.PowerButton()
	vm.Wait(2 * time.Minute)
	vm.Close()

	// The VM wrote to its overlay, not to img: the baseline boots that.
	say("baseline: tar | age and age -d | tar -x of the same folder (backup %.1f s, staged %.1f s, put in place %.1f s)", backupS, stageS, applyS)
	tarS, untarS, err := b.tarAge(vm.DiskPath())
	if err != nil {
		return fmt.Errorf("tar | age baseline: %w", err)
	}
	row("backup: 1 GiB app data, kept on the box (s)", backupS, tarS, "(baseline: tar | age -p to the data partition)")
	row("restore: 1 GiB app data, staged + put in place (s)", stageS+applyS, untarS,
		fmt.Sprintf("(staged %.1f s, boot to app up %.1f s; baseline: age -d | tar -x)", stageS, applyS))
	row("memory: agent RSS peak, 1 GiB backup (MiB)", backupPeak, smallPeak,
		fmt.Sprintf("flat: <= 1.1x (baseline: a backup without the 1 GiB; idle %.1f MiB; %d samples)", mib(idle.Agent.RSSBytes), backupN))
	row("memory: agent RSS peak, 1 GiB restore (MiB)", restorePeak, smallPeak, fmt.Sprintf("flat: <= 1.1x (%d samples while staging)", restoreN))
	return nil
}

// sampled runs f, sampling the agent's RSS meanwhile, and returns the
// seconds f took and the peak.
func (x *box) sampled(f func() error) (seconds, peakMiB float64, samples int, err error) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		peakMiB, samples = x.sampleRSS(stop)
	}()
	t0 := time.Now()
	err = f()
	seconds = time.Since(t0).Seconds()
	close(stop)
	wg.Wait()
	return seconds, peakMiB, samples, err
}

// appBulk asks the demo app about its bulk data.
func appBulk(method, url string) (bulk, error) {
	var out bulk
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return out, err
	}
	resp, err := (&http.Client{Timeout: 20 * time.Minute}).Do(req)
	if err != nil {
		return out, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return out, nil
	case resp.StatusCode != http.StatusOK:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return out, fmt.Errorf("%s %s: %s %s", method, url, resp.Status, strings.TrimSpace(string(b)))
	}
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// tarAge boots the kernel directly with the tarage initramfs on disk (the
// backup VM's, with the same memory and CPUs) and returns its two
// timings.
func (b *bench) tarAge(disk string) (backupS, restoreS float64, err error) {
	bin := filepath.Join(b.work, "tarageinit")
	if err := tinyinitrd.Build(".", "./qemu/cmd/bench/tarageinit", bin); err != nil {
		return 0, 0, err
	}
	initrd := filepath.Join(b.work, "tarage.cpio.zst")
	cmd := exec.Command("go", "run", "./initramfs", "-kernel", b.kernelDir, "-agent", bin,
		"-binary", "github.com/u-root/u-root/cmds/core/tar", "-o", initrd)
	cmd.Env = append(os.Environ(), "GOAMD64=v1")
	if o, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, o)
	}
	vm, err := b.start(qemu.Config{
		Image: disk, DiskBus: qemu.DefaultDiskBus,
		Kernel: filepath.Join(b.kernelDir, "vmlinuz"), Initrd: initrd,
		Append:   "console=ttyS0 panic=-1",
		BIOS:     true,
		NoReboot: true,
		WorkDir:  filepath.Join(b.work, "tarage-vm"),
	})
	if err != nil {
		return 0, 0, err
	}
	defer vm.Close()
	m, err := vm.Expect(`TARAGE (error=.*|bytes=([0-9]+) archive=([0-9]+) backup=([0-9.]+) restore=([0-9.]+))`, 30*time.Minute)
	vm.Wait(time.Minute)
	if err != nil {
		return 0, 0, err
	}
	if strings.HasPrefix(m[1], "error=") {
		return 0, 0, fmt.Errorf("tarageinit: %s", m[1])
	}
	say("baseline: %s", m[0])
	if n, _ := strconv.ParseInt(m[2], 10, 64); n < backupMiB<<20 {
		return 0, 0, fmt.Errorf("tarageinit found %d bytes of app data, want at least %d", n, backupMiB<<20)
	}
	backupS, _ = strconv.ParseFloat(m[4], 64)
	restoreS, _ = strconv.ParseFloat(m[5], 64)
	return backupS, restoreS, nil
}
