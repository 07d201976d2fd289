package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/image/diskimage"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/image/manifest"
	"keel.dev/keel/qemu"
	"keel.dev/keel/qemu/tinyinitrd"
)

// The install figures' packages and image.
const (
	smallPayload = 200 << 20 // the throughput and first memory figure
	largePayload = 1 << 30   // the second memory figure
	// benchBase is the base slot size of the bench image: the 1 GiB
	// payload and some room.
	benchBase      = largePayload + 32*layout.MiB
	benchData      = 512 * layout.MiB
	benchPassword  = "keel-bench-password"
	rssInterval    = 200 * time.Millisecond
	benchTimeout   = 4 * time.Minute // a boot under TCG
	installTimeout = 20 * time.Minute
)

// installFigures measures what an install costs (issue 3): throughput of
// a 200 MiB upload against u-root dd writing the same bytes to the same
// partition; the agent's peak memory while it installs 200 MiB and 1 GiB
// against its idle memory; wall time from the install request of a real
// base package to its committed trial boot against a plain reboot. First
// the dd floor writes base-b of the bench image (1 GiB+ base slots); then
// one VM on that image runs, in this order: a plain reboot, the idle
// sample, the two random-payload installs into slot b with reboot=later
// (never booted), and the real 1.1.0 install, which overwrites slot b and
// reboots into it.
// reWritten is the agent's log of a payload written, for a 200 MiB one.
var reWritten = regexp.MustCompile(fmt.Sprintf(`msg="payload written and read back".* bytes=%d write_s=([0-9.]+) read_back_s=([0-9.]+)`, smallPayload))

func (b *bench) installFigures() error {
	say("building the bench image and packages")
	img, err := b.benchImage()
	if err != nil {
		return fmt.Errorf("bench image: %w", err)
	}
	basePkg, err := b.basePackage("1.1.0")
	if err != nil {
		return fmt.Errorf("base package: %w", err)
	}
	// Random payloads are incompressible; with reboot=later nothing boots
	// them. Their versions only have to be newer than the running 1.0.0.
	small, err := b.randomPackage("1.0.1", smallPayload)
	if err != nil {
		return err
	}
	large, err := b.randomPackage("1.0.2", largePayload)
	if err != nil {
		return err
	}
	ddInitrd, err := b.ddInitramfs()
	if err != nil {
		return fmt.Errorf("dd initramfs: %w", err)
	}

	// 1's baseline first (it is quick, and fails fast): dd of as many bytes
	// to base-b of the same image, the slot the installs write.
	ddS, err := b.ddFloor(img, ddInitrd, layout.BaseB, smallPayload>>20)
	if err != nil {
		return fmt.Errorf("dd floor: %w", err)
	}

	say("booting the bench image")
	vm, err := b.start(qemu.Config{Image: img, CPUs: b.cpus, WorkDir: filepath.Join(b.work, "install-vm")})
	if err != nil {
		return err
	}
	defer vm.Close()
	box := newBox(vm)
	if _, err := vm.Expect(`keel: ready`, benchTimeout); err != nil {
		return fmt.Errorf("first boot: %w", err)
	}
	if _, err := box.waitStatus(benchTimeout, func(s api.Status) bool { return s.Boot.Committed }); err != nil {
		return fmt.Errorf("first boot: %w", err)
	}

	// 3's baseline: a plain reboot to ready and committed.
	say("plain reboot")
	t0 := time.Now()
	if code, body, err := box.do("POST", "/api/v1/power/reboot", nil, 0); err != nil || code != http.StatusAccepted {
		return fmt.Errorf("reboot: %d %s %v", code, body, err)
	}
	if _, err := vm.Expect(`keel: ready`, benchTimeout); err != nil {
		return fmt.Errorf("plain reboot: %w", err)
	}
	if _, err := box.waitStatus(benchTimeout, func(s api.Status) bool {
		return s.Boot.Committed && s.UptimeS < time.Since(t0).Seconds()
	}); err != nil {
		return fmt.Errorf("plain reboot: %w", err)
	}
	rebootS := time.Since(t0).Seconds()

	// 2's baseline: idle after the boot settled (the first request caches
	// the password check).
	box.status()
	time.Sleep(10 * time.Second)
	idle, err := box.status()
	if err != nil {
		return err
	}
	idleMiB := mib(idle.Agent.RSSBytes)

	// 1's other baseline: the same 200 MiB over the same HTTPS path into
	// the agent's upload test, which throws them away.
	sinkS, err := box.uploadTest(small)
	if err != nil {
		return fmt.Errorf("upload test: %w", err)
	}
	// The throughput is timed without the memory sampling: each status
	// request costs the one emulated CPU time the install and the upload
	// test share, and the upload test is not sampled either.
	say("installing 200 MiB (idle RSS %.1f MiB, reboot %.1f s, upload test %.1f MiB/s)", idleMiB, rebootS, mib(smallPayload)/sinkS)
	rateRes, err := box.install(small, "?reboot=later", false)
	if err != nil {
		return fmt.Errorf("install of 200 MiB: %w", err)
	}
	// The agent's own split: receiving, hashing and writing overlap, and
	// the read-back comes after them.
	split := ""
	if _, m, ok := vm.SeenAt(reWritten); ok {
		w, _ := strconv.ParseFloat(m[1], 64)
		r, _ := strconv.ParseFloat(m[2], 64)
		split = fmt.Sprintf(": receive, hash and write %.1f s, read back %.1f s", w, r)
	}
	say("installing 200 MiB again, sampling memory (%.1f s%s)", rateRes.seconds, split)
	smallRes, err := box.install(small, "?reboot=later", true)
	if err != nil {
		return fmt.Errorf("install of 200 MiB: %w", err)
	}
	say("installing 1 GiB (200 MiB sampled: %.1f s, peak %.1f MiB)", smallRes.seconds, smallRes.peakMiB)
	largeRes, err := box.install(large, "?reboot=later", true)
	if err != nil {
		return fmt.Errorf("install of 1 GiB: %w", err)
	}

	// 3: the real package, installed and booted.
	say("installing and booting base 1.1.0 (1 GiB: %.1f s, peak %.1f MiB)", largeRes.seconds, largeRes.peakMiB)
	t0 = time.Now()
	if _, err := box.install(basePkg, "", false); err != nil {
		return fmt.Errorf("install of base 1.1.0: %w", err)
	}
	if _, err := vm.Expect(`keel: ready`, benchTimeout); err != nil {
		return fmt.Errorf("boot of 1.1.0: %w", err)
	}
	if _, err := box.waitStatus(benchTimeout, func(s api.Status) bool {
		return s.Base.Version == "1.1.0" && s.Boot.Committed
	}); err != nil {
		return fmt.Errorf("boot of 1.1.0: %w", err)
	}
	commitS := time.Since(t0).Seconds()
	vm.PowerButton()
	vm.Wait(time.Minute)
	vm.Close()

	// The goal is against the slower floor: the box cannot install faster
	// than it receives, nor than its disk takes the bytes.
	sinkRate, ddRate := mib(smallPayload)/sinkS, mib(smallPayload)/ddS
	row("install: 200 MiB base over the API (MiB/s)", mib(smallPayload)/rateRes.seconds, min(sinkRate, ddRate),
		fmt.Sprintf(">= 0.8x the slower floor: the same upload into the upload test %.1f MiB/s, u-root dd bs=1M + fsync to base-b %.1f MiB/s", sinkRate, ddRate))
	row("memory: agent RSS peak, 200 MiB pkg (MiB)", smallRes.peakMiB, idleMiB,
		fmt.Sprintf("<= 64 MiB (max of %d status samples every 200 ms; baseline: idle)", smallRes.samples))
	row("memory: agent RSS peak, 1 GiB pkg (MiB)", largeRes.peakMiB, idleMiB,
		fmt.Sprintf("<= 64 MiB, flat (max of %d samples; %.1f MiB/s)", largeRes.samples, mib(largePayload)/largeRes.seconds))
	row("install: request to 1.1.0 committed (s)", commitS, rebootS, "(baseline: plain reboot to committed)")
	return nil
}

// benchImage builds a 1.0.0 image of the built initramfs with base slots
// big enough for the 1 GiB payload, a ~512 MiB data partition and the bench
// password. The raw file stays sparse.
func (b *bench) benchImage() (string, error) {
	sizes := layout.DefaultSizes
	sizes.Base, sizes.Data = benchBase, benchData
	out := filepath.Join(b.work, "bench.img")
	return out, b.buildImage(out, diskimage.Options{Size: layout.MinDiskSize(sizes), Sizes: sizes, GrubTimeout: 2})
}

// buildImage writes to out a 1.0.0 image of the built kernel and initramfs
// with the bench password; o adds the sizes, the app and the GRUB timeout.
func (b *bench) buildImage(out string, o diskimage.Options) error {
	rel, err := b.kernelRelease()
	if err != nil {
		return err
	}
	o.Out, o.Kernel, o.KernelRelease, o.Initramfs = out, filepath.Join(b.kernelDir, "vmlinuz"), rel, b.initramfs
	o.Version, o.AdminPassword, o.BuildTime = "1.0.0", benchPassword, time.Now()
	return diskimage.Build(context.Background(), o)
}

// kernelRelease is the release of the kernel in -kernel-dir.
func (b *bench) kernelRelease() (string, error) {
	rel, err := os.ReadFile(filepath.Join(b.kernelDir, "version"))
	return strings.TrimSpace(string(rel)), err
}

// signingKey reads the vendor key (-vendor-key) the packages are signed with.
func (b *bench) signingKey() (ed25519.PrivateKey, error) {
	keyPEM, err := os.ReadFile(b.vendorKey)
	if err != nil {
		return nil, fmt.Errorf("vendor key (-vendor-key): %w", err)
	}
	return kpkg.ParsePrivateKey(keyPEM)
}

// basePackage builds a signed, bootable base package of this tree's kernel
// and initramfs, as `make package` and the VM tests do.
func (b *bench) basePackage(version string) (string, error) {
	rel, err := b.kernelRelease()
	if err != nil {
		return "", err
	}
	sq := filepath.Join(b.work, "base-"+version+".squashfs")
	m := manifest.Base{Kind: "base", Name: "keel", Version: version, BuildTime: time.Now().UTC(), Kernel: rel}
	if err := diskimage.BaseSquashfs(sq, filepath.Join(b.kernelDir, "vmlinuz"), b.initramfs, m); err != nil {
		return "", err
	}
	payload, err := os.Open(sq)
	if err != nil {
		return "", err
	}
	defer payload.Close()
	return b.writePackage(version, payload)
}

// randomPackage writes a signed base package whose payload is size
// incompressible pseudo-random bytes.
func (b *bench) randomPackage(version string, size int64) (string, error) {
	return b.writePackage(version, &randomReader{size: size, seed: uint64(size)})
}

func (b *bench) writePackage(version string, payload io.ReadSeeker) (string, error) {
	key, err := b.signingKey()
	if err != nil {
		return "", err
	}
	out := filepath.Join(b.work, "keel-base-"+version+".kpkg")
	f, err := os.Create(out)
	if err != nil {
		return "", err
	}
	man := kpkg.Manifest{Kind: kpkg.KindBase, Name: "keel", Version: kpkg.MustParseVersion(version)}
	if err := kpkg.Write(f, man, payload, key); err != nil {
		f.Close()
		return "", err
	}
	return out, f.Close()
}

// randomReader yields size pseudo-random bytes; it seeks only back to the
// start, which is all kpkg.Write needs to read it twice.
type randomReader struct {
	size, pos int64
	seed      uint64
	rng       *rand.ChaCha8
}

func (r *randomReader) Read(p []byte) (int, error) {
	if r.rng == nil {
		var s [32]byte
		copy(s[:], strconv.FormatUint(r.seed, 10))
		r.rng = rand.NewChaCha8(s)
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if n := r.size - r.pos; int64(len(p)) > n {
		p = p[:n]
	}
	n, _ := r.rng.Read(p)
	r.pos += int64(n)
	return n, nil
}

func (r *randomReader) Seek(off int64, whence int) (int64, error) {
	switch {
	case whence == io.SeekCurrent && off == 0:
		return r.pos, nil
	case whence == io.SeekStart && off == 0:
		r.pos, r.rng = 0, nil
		return 0, nil
	}
	return 0, fmt.Errorf("randomReader seeks only to the start")
}

// ddInitramfs builds keel's initramfs with ddinit as /init instead of the
// agent: the same kernel modules and u-root dd.
func (b *bench) ddInitramfs() (string, error) {
	bin := filepath.Join(b.work, "ddinit")
	if err := tinyinitrd.Build(".", "./qemu/cmd/bench/ddinit", bin); err != nil {
		return "", err
	}
	out := filepath.Join(b.work, "dd.cpio.zst")
	cmd := exec.Command("go", "run", "./initramfs", "-kernel", b.kernelDir, "-agent", bin, "-o", out)
	cmd.Env = append(os.Environ(), "GOAMD64=v1")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, o)
	}
	return out, nil
}

// ddFloor boots the kernel directly with the dd initramfs on an overlay of
// img (same disk bus, memory and CPUs as the install VM) and returns the
// seconds dd took to write mibs MiB to part, fsync included.
func (b *bench) ddFloor(img, initrd, part string, mibs int64) (float64, error) {
	vm, err := b.start(qemu.Config{
		Image: img, DiskBus: qemu.DefaultDiskBus,
		Kernel: filepath.Join(b.kernelDir, "vmlinuz"), Initrd: initrd,
		Append:   fmt.Sprintf("console=ttyS0 panic=-1 keel.ddpart=%s keel.ddcount=%d", part, mibs),
		BIOS:     true,
		NoReboot: true,
		CPUs:     b.cpus,
		WorkDir:  filepath.Join(b.work, "dd-vm"),
	})
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	m, err := vm.Expect(`DDBENCH (error=.*|part=\S+ device=\S+ bytes=([0-9]+) dd=[0-9.]+ total=([0-9.]+))`, benchTimeout)
	vm.Wait(time.Minute)
	if err != nil {
		return 0, err
	}
	if strings.HasPrefix(m[1], "error=") {
		return 0, fmt.Errorf("ddinit: %s", m[1])
	}
	if n, _ := strconv.ParseInt(m[2], 10, 64); n != mibs<<20 {
		return 0, fmt.Errorf("ddinit wrote %d bytes, want %d", n, mibs<<20)
	}
	for _, l := range strings.Split(vm.Output(), "\n") {
		if strings.Contains(l, "copied") || strings.HasPrefix(l, "DDBENCH") {
			say("dd floor: %s", strings.TrimSpace(l))
		}
	}
	return strconv.ParseFloat(m[3], 64)
}

// box talks to one VM's API with the bench password.
type box struct {
	url    string
	client *http.Client
}

func newBox(vm *qemu.VM) *box {
	return &box{url: fmt.Sprintf("https://127.0.0.1:%d", vm.HTTPSPort()), client: vmClient(0, true)}
}

// vmClient is an HTTPS client for a VM's self-signed API; timeout 0 means
// none. Without keepAlive each request opens a connection of its own (a
// poll that must not reuse one from before a reboot).
func vmClient(timeout time.Duration, keepAlive bool) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: !keepAlive,
	}}
}

// do sends one request; timeout 0 means none.
func (x *box) do(method, path string, body io.Reader, timeout time.Duration) (int, []byte, error) {
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, x.url+path, body)
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth("admin", benchPassword)
	resp, err := x.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (x *box) status() (api.Status, error) { return x.statusWithin(5 * time.Second) }

func (x *box) statusWithin(timeout time.Duration) (api.Status, error) {
	var s api.Status
	code, b, err := x.do("GET", "/api/v1/status", nil, timeout)
	if err != nil {
		return s, err
	}
	if code != http.StatusOK {
		return s, fmt.Errorf("GET /api/v1/status: %d %s", code, b)
	}
	return s, json.Unmarshal(b, &s)
}

// waitStatus polls the status every 100 ms until ok holds, each attempt
// on a new connection with a short timeout: a connection from before a
// reboot is dropped, and a long timeout hides the moment the box answers
// (the first status after a reboot now and then got no answer at all, and
// the reboot figure was 5 s longer, the old timeout; the first attempt
// checks the password too, about 0.4 s under emulation). The callers wait
// for the console's ready line first.
func (x *box) waitStatus(timeout time.Duration, ok func(api.Status) bool) (api.Status, error) {
	c := &box{url: x.url, client: vmClient(0, false)}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		next := time.Now().Add(100 * time.Millisecond)
		s, err := c.statusWithin(3 * time.Second)
		if err == nil && ok(s) {
			return s, nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("status %+v", s)
		}
		time.Sleep(time.Until(next))
	}
	return api.Status{}, fmt.Errorf("no matching status within %s (last: %v)", timeout, last)
}

// installResult is one upload: seconds from its first body byte to the
// answer, and the agent's peak RSS sampled meanwhile.
type installResult struct {
	seconds float64
	peakMiB float64
	samples int
}

// install uploads pkg to POST /api/v1/install+query and waits for 202,
// sampling the agent's RSS every rssInterval when sample is set.
func (x *box) install(pkg, query string, sample bool) (installResult, error) {
	var res installResult
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if sample {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res.peakMiB, res.samples = x.sampleRSS(stop)
		}()
	}
	code, b, seconds, err := x.upload(pkg, "/api/v1/install"+query)
	close(stop)
	wg.Wait()
	if err != nil {
		return res, err
	}
	if code != http.StatusAccepted {
		return res, fmt.Errorf("POST /api/v1/install%s: %d %s", query, code, b)
	}
	res.seconds = seconds
	return res, nil
}

// uploadTest sends pkg to POST /api/v1/install/upload-test as an install
// sends it, and returns the seconds from its first byte read to the answer.
func (x *box) uploadTest(pkg string) (float64, error) {
	code, b, seconds, err := x.upload(pkg, "/api/v1/install/upload-test")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("POST /api/v1/install/upload-test: %d %s", code, b)
	}
	return seconds, nil
}

// upload POSTs the file pkg to path and returns the answer and the seconds
// from the first byte the client read of pkg to the answer.
func (x *box) upload(pkg, path string) (int, []byte, float64, error) {
	f, err := os.Open(pkg)
	if err != nil {
		return 0, nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, nil, 0, err
	}
	body := &firstRead{r: f}
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", x.url+path, body)
	if err != nil {
		return 0, nil, 0, err
	}
	req.ContentLength = st.Size()
	req.SetBasicAuth("admin", benchPassword)
	resp, err := x.client.Do(req)
	end := time.Now()
	if err != nil {
		return 0, nil, 0, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, bytes.TrimSpace(b), end.Sub(time.Unix(0, body.first.Load())).Seconds(), nil
}

// sampleRSS reads agent.rss_bytes every rssInterval on a connection of its
// own until stop closes, and returns the largest value in MiB.
func (x *box) sampleRSS(stop <-chan struct{}) (float64, int) {
	s := &box{url: x.url, client: vmClient(0, true)}
	defer s.client.CloseIdleConnections()
	var peak float64
	n := 0
	t := time.NewTicker(rssInterval)
	defer t.Stop()
	for {
		if st, err := s.status(); err == nil {
			peak = max(peak, mib(st.Agent.RSSBytes))
			n++
		}
		select {
		case <-stop:
			return peak, n
		case <-t.C:
		}
	}
}

// firstRead records when the HTTP client first reads the body: the first
// byte sent.
type firstRead struct {
	r     io.Reader
	first atomic.Int64
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.first.CompareAndSwap(0, time.Now().UnixNano())
	return f.r.Read(p)
}

// say reports progress on stderr; the figures go to stdout.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
