package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/agent/access"
	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/appdata"
	"keel.dev/keel/agent/apps"
	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/agent/audit"
	"keel.dev/keel/agent/backup"
	"keel.dev/keel/agent/bootseq"
	"keel.dev/keel/agent/certs"
	"keel.dev/keel/agent/coldplug"
	"keel.dev/keel/agent/config"
	"keel.dev/keel/agent/datafs"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/identity"
	"keel.dev/keel/agent/peerkey"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/agent/powerbutton"
	"keel.dev/keel/agent/reset"
	"keel.dev/keel/agent/sandbox"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/agent/supervisor"
	"keel.dev/keel/agent/users"
	"keel.dev/keel/agent/usersapi"
	"keel.dev/keel/agent/watchdog"
	"keel.dev/keel/agent/webui"
	"keel.dev/keel/image/dataformat"
	"keel.dev/keel/image/layout"
	"keel.dev/keel/image/manifest"
)

// What the boot phases provide and need.
const (
	resDrivers   bootseq.Resource = "drivers"             // device and file-system modules loaded
	resDisk      bootseq.Resource = "boot disk"           // the disk GRUB booted from, where partitions are looked up
	resBootState bootseq.Resource = "boot state"          // the ESP mounted, GRUB's account read
	resBase      bootseq.Resource = "base"                // the running base slot's manifest
	resData      bootseq.Resource = "data"                // the data partition mounted, or known unusable
	resConfig    bootseq.Resource = "configuration"       // the serial and the agent's settings
	resUsers     bootseq.Resource = "users"               // the admin accounts
	resIdentity  bootseq.Resource = "identity"            // the TLS and signing keys
	resNetwork   bootseq.Resource = "network"             // network, time and floating addresses
	resAddresses bootseq.Resource = "addresses"           // the DHCP leases of the cabled links, or a few seconds waited for them
	resApps      bootseq.Resource = "application runtime" // the application runtime, made but not started
	resAppUp     bootseq.Resource = "application"         // the application started (or known absent)
	resPower     bootseq.Resource = "power button"        // the power button watched
	resPort      bootseq.Resource = "API port"            // port 443 bound, before any application can take it
	resAPI       bootseq.Resource = "API"                 // the API serving
	resCommitted bootseq.Resource = "commit"              // the trial boot decided
	resPending   bootseq.Resource = "pending installs"
	resFailover  bootseq.Resource = "failover" // the pair's state read, the application held on a backup
)

// phases is the boot sequence. A failing phase is logged and the sequence
// goes on; phases that leave the box unusable put it in recovery mode
// instead of stopping, so the operator can always reach it. What a phase
// needs only orders it: a phase that needs the data partition runs when
// mounting it failed too, and does what it can without.
func (a *agent) phases() []bootseq.Phase {
	r := func(rs ...bootseq.Resource) []bootseq.Resource { return rs }
	run := func(f func() error) func(context.Context) error { return func(context.Context) error { return f() } }
	return []bootseq.Phase{
		{Name: "drivers", Provides: r(resDrivers), Run: run(a.loadDrivers)},
		{Name: "boot disk", Needs: r(resDrivers), Provides: r(resDisk), Run: run(a.findBootDisk)},
		{Name: "boot state", Needs: r(resDisk), Provides: r(resBootState), Run: run(a.readBootState)},
		{Name: "base slot", Needs: r(resBootState), Provides: r(resBase), Run: run(a.mountBase)},
		// A factory reset asked for is on the ESP, read before the data
		// partition is mounted.
		{Name: "data partition", Needs: r(resDisk, resBootState), Provides: r(resData), Run: run(a.mountData)},
		{Name: "configuration", Needs: r(resData), Provides: r(resConfig), Run: run(a.loadConfig)},
		// The users file is mirrored on the ESP for recovery mode.
		{Name: "credentials", Needs: r(resData, resBootState), Provides: r(resUsers), Run: run(a.loadUsers)},
		{Name: "identity", Needs: r(resConfig, resBootState), Provides: r(resIdentity), Run: run(a.loadIdentity)},
		{Name: "network", Needs: r(resData, resDrivers), Provides: r(resNetwork), Run: run(a.startNetwork)},
		// The ready line means the box answers on its addresses.
		{Name: "addresses", Needs: r(resNetwork), Provides: r(resAddresses), Run: run(a.awaitAddresses)},
		// The agent holds port 443 before the application, which runs
		// on the same box, can bind it.
		{Name: "API port", Provides: r(resPort), Run: run(a.bindAPIPort)},
		{Name: "application runtime", Needs: r(resData, resDrivers), Provides: r(resApps), Run: run(a.makeAppRuntime)},
		// The API does not wait for the application to start: it
		// answers while the app's slot is mounted and its process
		// launched (the runtime serialises installs behind that).
		// A backup of a failover pair holds its application: the
		// relationship is read first.
		{Name: "failover", Needs: r(resApps, resNetwork, resIdentity, resUsers), Provides: r(resFailover), Run: run(a.openFailover)},
		{Name: "application", Needs: r(resApps, resPort, resFailover), Provides: r(resAppUp), Run: run(a.startApplication)},
		{Name: "power button", Needs: r(resDrivers), Provides: r(resPower), Run: run(a.watchPowerButton)},
		// The API's routes are the network's, the installer's (which
		// needs the boot state, the base and the application runtime)
		// and the updates' (the identity signs download keys).
		{Name: "API", Needs: r(resPort, resUsers, resIdentity, resNetwork, resApps, resBase, resBootState, resFailover), Provides: r(resAPI), Run: run(a.startAPI)},
		{Name: "health check", Needs: r(resAPI, resPower, resAppUp, resAddresses), Provides: r(resCommitted), Run: run(a.checkAndCommit)},
		{Name: "pending installs", Needs: r(resCommitted), Provides: r(resPending), Run: run(a.resumePending)},
	}
}

func (a *agent) boot() {
	a.say("booting")
	_, err := bootseq.Run(a.ctx, a.phases(), func(res bootseq.Result) {
		a.wd.Pet()
		if res.Err != nil {
			a.log.Error("boot phase failed", "phase", res.Phase, "err", res.Err)
			return
		}
		a.log.Info("boot phase done", "phase", res.Phase, "at", res.Start.Round(time.Millisecond), "took", res.Took.Round(time.Millisecond))
	})
	if err != nil {
		// A sequence that does not hold together is a bug of this build;
		// say so where the operator looks.
		a.setRecovery(err.Error())
		a.log.Error("boot sequence", "err", err)
	}
	a.mu.Lock()
	rec, result := a.recovery, a.result
	a.mu.Unlock()
	a.say("%s", result)
	if rec != "" {
		a.say("RECOVERY MODE: %s", rec)
	}
	if a.id != nil {
		a.say("certificate SHA-256 fingerprint %s (curl --pinnedpubkey sha256//%s)", a.id.Fingerprint(), a.id.PublicKeyPin())
	}
	up := uptime()
	idle, iowait := cpuWaited()
	// Whether the boot waited for something (the disk, among others) or
	// had work for every CPU all along: the bench's timeline shows it.
	a.log.Info("boot done", "uptime", fmt.Sprintf("%.2fs", up), "cpu_idle", fmt.Sprintf("%.2fs", idle),
		"cpu_iowait", fmt.Sprintf("%.2fs", iowait), "cpus", runtime.NumCPU())
	a.say("ready: version %s, slot %s, serial %s, uptime %.2fs", a.version(), a.boot0.Slot, a.serial, up)
	// The disks keel does not use get their drivers once the box is up:
	// the commit waited for all it uses, the boot disk among them. Not
	// on the main goroutine: a shutdown asked for meanwhile must not wait
	// for drivers loading at the lowest priority.
	go func() {
		a.releaseStorage()
		close(a.storage)
	}()
}

// releaseStorage loads the storage drivers the coldplug held back (all
// but the boot controller's), if it held any.
func (a *agent) releaseStorage() {
	if a.loader == nil || !a.loader.Holding() {
		return
	}
	start := time.Now()
	loaded := a.loader.ReleaseStorage(a.ctx)
	a.log.Info("other storage drivers loaded", "modules", loaded, "took", time.Since(start).Round(time.Millisecond))
}

func (a *agent) loadDrivers() error {
	l, err := coldplug.New(coldplug.Options{Logger: a.log})
	if err != nil {
		return err
	}
	a.loader = l
	// Subscribed before the walk, the coldplug follows the devices its
	// drivers reveal by their events, and the hotplug watch after it
	// goes on from the same events without walking sysfs again.
	if err := l.Subscribe(); err != nil {
		a.log.Warn("no uevents: coldplug walks sysfs after every round", "err", err)
	}
	// File systems and character sets have no device to match; they load
	// beside the device drivers rather than after them. The ESP's mount
	// takes the kernel's defaults, codepage 437 and iocharset ascii; any
	// other charset a mount asks for comes through /sbin/modprobe, so the
	// boot does not spend an emulated CPU's 50 ms on each of the others.
	fsDone := make(chan struct{})
	go func() {
		defer close(fsDone)
		var wg sync.WaitGroup
		for _, m := range []string{"vfat", "nls_cp437", "nls_ascii", "squashfs", "ext4"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := l.Load(a.ctx, m); err != nil && !errors.Is(err, coldplug.ErrUnknown) {
					a.log.Warn("module not loaded", "module", m, "err", err)
				}
			}()
		}
		wg.Wait()
	}()
	// The other storage controllers' drivers wait until the box is
	// ready (releaseStorage); findBootDisk loads them at once if the
	// disk is not behind the firmware's controller after all.
	if dev := a.bootController(l); dev != "" {
		if a.boot0.ESP != "" {
			l.HoldStorage(dev)
		} else {
			// Without the ESP's name every disk is searched.
			a.log.Info("every storage driver loads: GRUB did not name its disk")
		}
	}
	loaded, err := l.Coldplug(a.ctx)
	<-fsDone
	if err != nil {
		return err
	}
	a.log.Info("drivers loaded", "modules", len(loaded))
	a.sup.Start(a.ctx, supervisor.Service{Name: "hotplug", Run: l.Watch})
	a.armWatchdog()
	return nil
}

// trialWatchdog is how long a trial boot may go without progress before
// the hardware resets it: long enough for a slow emulated boot phase.
const trialWatchdog = 30 * time.Second

// armWatchdog arms the hardware watchdog for a trial boot, so a hang before
// the commit resets the box and GRUB counts the try.
func (a *agent) armWatchdog() {
	if a.boot0.Mode != slots.ModeTrial {
		return
	}
	wd, err := watchdog.Arm("/dev/watchdog", trialWatchdog)
	if err != nil {
		a.log.Warn("no hardware watchdog for this trial boot: a hang will need a power cycle", "err", err)
		return
	}
	a.wd = wd
	a.log.Info("watchdog armed for the trial boot", "timeout", trialWatchdog)
}

// findBootDisk makes partitions be looked up on the disk GRUB booted
// from, named by its ESP's GUID (keel.esp), so a second disk with the same
// GPT names (an installer stick, a disk from another box) is never used.
func (a *agent) findBootDisk() error {
	esp := a.boot0.ESP
	if esp == "" {
		a.log.Warn("GRUB did not name its disk (no keel.esp): partitions are looked up on every disk, and names found twice are refused")
		return nil
	}
	disk, err := a.blocks.WaitBootDisk(esp, 10*time.Second)
	if err != nil && a.loader != nil && a.loader.Holding() {
		// The firmware's boot option named another controller than
		// the one the disk is on: every storage driver, then.
		a.log.Warn("the boot disk is not behind the firmware's boot controller; loading every storage driver", "err", err)
		a.releaseStorage()
		disk, err = a.blocks.WaitBootDisk(esp, 10*time.Second)
	}
	if err != nil {
		a.say("the disk GRUB booted from was not found (%v): partitions are looked up on every disk, and names found twice are refused", err)
		return nil
	}
	a.blocks.Disk = disk
	a.log.Info("boot disk", "disk", disk, "esp", esp)
	return nil
}

func (a *agent) readBootState() error {
	a.kernel = kernelRelease()
	switch {
	case a.boot0.Operator:
		a.setRecovery("the recovery console was chosen at the GRUB menu")
	case a.boot0.Recovery:
		a.setRecovery("GRUB found no bootable base slot and booted the last good one in recovery mode")
	}
	esp, err := a.blocks.Wait(layout.ESP, 10*time.Second)
	if err != nil {
		return fmt.Errorf("find the ESP: %w", err)
	}
	if err := os.MkdirAll(espDir, 0o755); err != nil {
		return err
	}
	// Synchronous: FAT has no journal, and a power cut with a FAT update
	// still in the cache leaves chains that the next mount finds broken
	// and turns read-only (seen in a reset cut by the power). The ESP
	// holds only small files, written seldom.
	if err := unix.Mount(esp.Device, espDir, "vfat", unix.MS_SYNCHRONOUS|unix.MS_NOATIME|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "umask=077,quiet"); err != nil {
		return fmt.Errorf("mount the ESP %s: %w", esp.Device, err)
	}
	a.addMount(espDir)
	st, which, err := a.esp.Read()
	if err != nil {
		return err
	}
	a.bootSt = st
	// GRUB's parser forgives more damage than the agent's; a copy either of
	// them could not use gets rewritten.
	if which == slots.Backup {
		a.boot0.EnvFrom = slots.Backup
	}
	return nil
}

func (a *agent) mountBase() error {
	part, err := a.blocks.Find(layout.BasePart(a.boot0.Slot))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(baseDir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(part.Device, baseDir, "squashfs", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount base slot %s (%s): %w", a.boot0.Slot, part.Device, err)
	}
	a.addMount(baseDir)
	// Only the applications run the tools: without them the box still
	// boots, updates and serves.
	if err := a.mountTools(); err != nil {
		a.log.Warn("the u-root tools are missing", "err", err)
	}
	b, err := os.ReadFile(filepath.Join(baseDir, manifest.BaseFile))
	if err != nil {
		return fmt.Errorf("base slot %s: %w", a.boot0.Slot, err)
	}
	m, err := manifest.ParseBase(b)
	if err != nil {
		return err
	}
	a.base = m
	return nil
}

// mountTools mounts each program of the base slot's tools folder on the
// empty file of the same name that the image builder left in the
// initramfs (see manifest.ToolsDir). A slot without the folder (its
// initramfs kept its tools) needs nothing.
func (a *agent) mountTools() error {
	dir := filepath.Join(baseDir, manifest.ToolsDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		src, dst := filepath.Join(dir, e.Name()), filepath.Join("/", manifest.ToolsDir, e.Name())
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", src, dst, err)
		}
		a.addMount(dst)
	}
	return nil
}

func (a *agent) mountData() error {
	part, err := a.blocks.Wait(layout.Data, 10*time.Second)
	if err != nil {
		a.setRecovery("no data partition was found")
		a.setData("missing")
		return err
	}
	if err := a.runPendingReset(part.Device, part.Size); err != nil {
		a.setRecovery("a factory reset could not finish: " + err.Error())
		a.setData("unusable")
		return err
	}
	out, err := datafs.Prepare(part.Device, part.Size, dataDir, datafs.Linux())
	if err != nil {
		a.setRecovery(err.Error())
		a.setData("unusable")
		a.say("the data partition could not be used: %v", err)
		return err
	}
	a.addMount(dataDir)
	if out == datafs.Formatted {
		a.say("the data partition was empty; a new file system was created")
		a.setData("formatted")
	} else {
		if out == datafs.Reserved {
			a.log.Info("the data file system kept no blocks for root; 5% are reserved now", "percent", dataformat.ReservedPercent)
		}
		a.setData("mounted")
	}
	if err := os.MkdirAll(keelDir, 0o700); err != nil {
		return err
	}
	// The agent's keys and users live there: nobody else reads it, also
	// on a data partition an older version made.
	if err := os.Chmod(keelDir, 0o700); err != nil {
		return err
	}
	// A restore staged before the restart goes in place before anything
	// reads its configuration.
	a.applyRestore()
	return nil
}

func (a *agent) dataMounted() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dataState == "mounted" || a.dataState == "formatted"
}

func (a *agent) setData(s string) {
	a.mu.Lock()
	a.dataState = s
	a.mu.Unlock()
}

func (a *agent) loadConfig() error {
	a.cfg = config.Default()
	a.serial = hardwareSerial()
	if !a.dataMounted() {
		if a.serial == "" {
			a.serial = "UNKNOWN"
		}
		return nil
	}
	cfg, created, err := config.Load(configPath)
	if err != nil {
		a.setRecovery(err.Error())
		return err
	}
	if a.serial == "" {
		if cfg.Serial == "" {
			b := make([]byte, 5)
			rand.Read(b)
			cfg.Serial = "KEEL-" + strings.ToUpper(hex.EncodeToString(b))
			created = true
		}
		a.serial = cfg.Serial
	}
	if created {
		if err := config.Save(configPath, cfg); err != nil {
			return err
		}
	}
	a.cfg = cfg
	return nil
}

// loadAccess reads the allowed networks and the inter-appliance key;
// without the data partition every network is allowed and there is no
// key.
func (a *agent) loadAccess() {
	a.access = &access.Store{}
	a.peerKey = &peerkey.Store{}
	if !a.dataMounted() {
		a.access.Load()
		return
	}
	a.access.Path, a.peerKey.Path = accessPath, peerKeyPath
	if err := a.access.Load(); err != nil {
		a.say("the allowed networks could not be read (%v): every network may manage the appliance until they are reset on the console", err)
		a.access = &access.Store{}
		a.access.Load()
	}
	if err := a.peerKey.Load(); err != nil {
		a.log.Error("the inter-appliance key could not be read", "err", err)
	}
}

func (a *agent) loadUsers() error {
	a.loadAccess()
	if !a.dataMounted() {
		s, err := users.OpenReadOnly(usersMirror)
		if err != nil || !s.Exists() {
			a.say("no copy of the admin credentials on the ESP: the API cannot authenticate anyone until the data partition is repaired")
			if err != nil {
				return err
			}
		}
		a.users = s
		return nil
	}
	s, err := users.Open(usersPath, usersMirror)
	if err != nil {
		a.setRecovery(err.Error())
		return err
	}
	a.users = s
	if s.Exists() {
		return s.SyncMirror()
	}
	var pre struct { // diskimage.Preseed
		AdminPasswordHash string `json:"admin_password_hash"`
	}
	if b, err := os.ReadFile(preseedPath); err == nil {
		json.Unmarshal(b, &pre)
	}
	if pre.AdminPasswordHash != "" {
		if err := s.InitializeHashed(pre.AdminPasswordHash, false); err != nil {
			return err
		}
		a.say("admin password set from the image's preseed")
	} else {
		pw, err := users.GeneratePassword()
		if err != nil {
			return err
		}
		if err := s.InitializeGenerated(pw); err != nil {
			return err
		}
		a.say("initial admin password: %s (shown once; you must change it at first login)", pw)
	}
	// The preseed has served its purpose; a password must not linger.
	if err := os.Remove(preseedPath); err == nil {
		atomicfile.SyncDir(keelDir)
	}
	return nil
}

func (a *agent) loadIdentity() error {
	dir := identityDir
	if !a.dataMounted() {
		// Recovery mode keeps its own identity on the ESP, so its
		// certificate stays the same across boots and the operator's pin
		// holds; without an ESP, a throwaway one for this boot.
		dir = "/run/keel/identity"
		if a.bootSt != nil {
			dir = recoveryIdentityDir
		}
	}
	id, err := identity.LoadOrCreate(dir, a.serial, []string{defaultHostname}, time.Now)
	if err != nil {
		return err
	}
	a.id = id
	return nil
}

// Where the application runtime keeps its state, mounts its slots and
// keeps the application's data.
const (
	appStatePath = keelDir + "/apps/state.json"
	appRunDir    = "/run/keel/app"
	// appSandboxDir holds the application's root (package sandbox).
	appSandboxDir = "/run/keel/sandbox"
	appDataRoot   = dataDir + "/apps"
)

// appLimits are the application's cgroup limits: enough for a busy
// service, not enough to starve the agent of memory, processes or CPU.
func appLimits() sandbox.Limits {
	l := sandbox.Limits{Pids: 512, CPUWeight: 50}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		l.MemoryMax = int64(si.Totalram) * int64(si.Unit) / 2
	}
	return l
}

// startApplication starts the application in the active application slot,
// if one holds an application. It needs the data partition: the state and
// the application's data live there.
// makeAppRuntime makes the application runtime the installer and the
// status use; startApplication starts it.
func (a *agent) makeAppRuntime() error {
	if !a.dataMounted() {
		return errors.New("the data partition is not mounted: no application runs, and app packages cannot be installed")
	}
	cgroups := sandbox.CgroupRoot
	if err := sandbox.MountCgroup2(cgroups); err != nil {
		a.log.Error("no cgroup v2: the application runs without its resource limits", "err", err)
		cgroups = ""
	}
	m := &apps.Manager{
		Slots:      slots.NewAppStore(appStatePath),
		RunDir:     appRunDir,
		DataRoot:   appDataRoot,
		Mount:      apps.BlockMount(a.blocks),
		Unmount:    apps.UnmountDir,
		SandboxDir: appSandboxDir,
		CgroupRoot: cgroups,
		Limits:     appLimits(),
		Volumes:    a.appVolumes(),
		Log:        a.log,
	}
	a.apps = m
	return nil
}

func (a *agent) startApplication() error {
	m := a.apps
	if m == nil {
		return nil // makeAppRuntime said why
	}
	// At shutdown the supervisor waits for this service, so the
	// application is stopped and its slot unmounted before the data
	// partition is.
	a.sup.Start(a.ctx, supervisor.Service{Name: "application", Run: func(ctx context.Context) error {
		<-ctx.Done()
		return m.Stop()
	}})
	if err := m.Start(a.ctx); err != nil {
		return err
	}
	if s := m.Status(); s.State != apps.StateNone {
		a.say("application %s %s started from slot %s", s.Name, s.Version, s.Slot)
	}
	return nil
}

// appVolumes sizes the application's data volume against the data
// partition: half of it by default, and never more than it can hold
// beside root's reserve and the agent's own files. Without loop devices
// the application keeps its plain folder (the status says so).
func (a *agent) appVolumes() *appdata.Volumes {
	if a.loader != nil {
		if err := a.loader.Load(a.ctx, "loop"); err != nil && !errors.Is(err, coldplug.ErrUnknown) {
			a.log.Warn("module not loaded", "module", "loop", "err", err)
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dataDir, &st); err != nil {
		a.log.Error("the data partition's size is unknown: the application's data folder has no size limit", "err", err)
		return nil
	}
	total := int64(st.Blocks) * st.Bsize
	return &appdata.Volumes{Root: appDataRoot, Default: total / 2, Max: total * 3 / 4, Log: a.log}
}

// appHealthy waits for the application's health check (none installed is
// healthy), petting the watchdog meanwhile.
func (a *agent) appHealthy() error {
	m := a.apps
	if m == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(a.ctx, 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- m.WaitHealthy(ctx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-time.After(time.Second):
			a.wd.Pet()
		}
	}
}

func (a *agent) watchPowerButton() error {
	devs := powerbutton.Find("/sys/class/input", "/dev")
	if len(devs) == 0 {
		return errors.New("no power button input device: the ACPI button or evdev driver is missing")
	}
	for _, d := range devs {
		d := d
		a.sup.Start(a.ctx, supervisor.Service{Name: "power button", Run: func(ctx context.Context) error {
			return powerbutton.Watch(ctx, d, func() {
				a.say("power button pressed")
				a.requestShutdown(pid1.PowerOff)
			})
		}})
	}
	return nil
}

func (a *agent) startAPI() error {
	if a.id == nil {
		return errors.New("no TLS identity; the API cannot start")
	}
	verify := func(string, string) bool { return false }
	var known func(string, string) bool
	mustChange := func(string) bool { return false }
	var lockout func() (int, time.Duration)
	sessions := &webui.Sessions{}
	if a.users != nil {
		verify, known, mustChange = a.users.Verify, a.users.Known, a.users.MustChange
		lockout = func() (int, time.Duration) { return a.users.Policy().Lockout() }
		sessions.SetTimeouts(a.users.Policy().Sessions())
	}
	// The audit log is on the data partition; without it, in memory.
	a.audit = &audit.Log{Logger: a.log}
	if a.dataMounted() {
		a.audit.Path = auditPath
	}
	reboot := func() error { return a.requestShutdown(pid1.Reboot) }
	shutdown := func() error { return a.requestShutdown(pid1.PowerOff) }
	var tlsFor func(*tls.ClientHelloInfo) (*tls.Config, error)
	if a.dataMounted() {
		st, err := certs.Open(certsPath, a.id.TLS, nil)
		if err != nil {
			// The appliance's own certificate still serves.
			a.log.Error("the imported certificates cannot be used", "err", err)
		} else {
			st.Hostname = func() string { h, _ := os.Hostname(); return h }
			a.certs, tlsFor = st, st.ConfigForClient
		}
	}
	// The pair's peer protocol asks for its own server name and gets the
	// identity certificate, whatever is assigned to the address.
	tlsFor = failover.PeerTLS(a.id.TLS, tlsFor)
	a.api = api.New(api.Config{
		Logger:       a.log,
		Verify:       verify,
		Known:        known,
		MustChange:   mustChange,
		Lockout:      lockout,
		Session:      sessions.Authenticate,
		Audit:        a.audit.Record,
		TLSForClient: tlsFor,
		Status:       func() any { return a.status() },
		Reboot:       reboot,
		Shutdown:     shutdown,
		Healthy:      func() error { return nil },
		Allowed:      a.access.Allowed,
		Refused:      access.Refusal,
		Refuse: func(r *http.Request) (int, string) {
			if a.failover == nil {
				return 0, ""
			}
			return a.failover.Refuse(r)
		},
	})
	a.audit.Routes(a.api)
	a.selftest.routes(a.api)
	// A box whose data partition is damaged can still be reset.
	reset.Store{Dir: espKeelDir}.Routes(a.api, a.serial, reboot)
	if a.dataMounted() && a.id != nil {
		a.backups = &backup.Service{
			Sections: a.backupSections, Key: a.id.Key, Meta: a.backupMeta, Jobs: a.jobs,
			StageDir: restoreDir, Dir: backupDir, Adjust: a.adjustRestore, Compatible: a.compatibleBackup,
			Restart: reboot, Log: a.log,
		}
		a.backups.Routes(a.api)
		a.sup.Start(a.ctx, supervisor.Service{Name: "daily backup", Run: a.backups.Daily})
	}
	a.access.Routes(a.api)
	if a.peerKey != nil {
		a.peerKey.Routes(a.api)
	}
	if a.certs != nil {
		a.certs.Routes(a.api)
	}
	// Every route is registered before the server starts serving.
	if a.users != nil {
		web, err := webui.New(webui.Config{
			Sessions:   sessions,
			Login:      a.api.CheckLogin,
			MustChange: mustChange,
			Call:       a.api.Call,
			Do:         a.api.Do,
			Audit:      a.api.Audit,
			Status:     a.status,
			Reboot:     reboot,
			Shutdown:   shutdown,
			Log:        a.log,
		})
		if err != nil {
			a.log.Error("no web interface", "err", err)
		} else {
			a.web = web
			a.api.HandlePublic(webui.Prefix, web)
			a.api.HandlePublic(webui.Prefix+"/", web)
		}
		usersapi.Routes{Store: a.users, EndSessions: sessions.EndUser, SetSessionTimeouts: sessions.SetTimeouts}.Register(a.api)
	}
	a.networkRoutes()
	a.failoverRoutes()
	if err := a.startInstaller(); err != nil {
		a.log.Error("package installs are disabled", "err", err)
	}
	ln := a.apiLn
	if ln == nil {
		if err := a.bindAPIPort(); err != nil {
			return err
		}
		ln = a.apiLn
	}
	cert := a.id.TLS
	a.sup.Start(a.ctx, supervisor.Service{Name: "api", Run: func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- a.api.Serve(ln, cert) }()
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			a.api.Shutdown(sctx)
			<-errc
			return nil
		case err := <-errc:
			// Serve closed the listener; open a new one for the restart.
			if l2, lerr := net.Listen("tcp", ":443"); lerr == nil {
				ln = l2
			}
			return err
		}
	}})
	a.startFailover()
	return nil
}

// bindAPIPort listens on port 443 for the API, which serves on it later.
func (a *agent) bindAPIPort() error {
	ln, err := net.Listen("tcp", ":443")
	if err != nil {
		return fmt.Errorf("listen on port 443: %w", err)
	}
	a.apiLn = ln
	return nil
}

// checkAndCommit runs the health checks of a trial boot and commits the
// slot, or marks it bad and reboots into the other one. It also records a
// fallback GRUB made and repairs a damaged copy of the boot state.
func (a *agent) checkAndCommit() error {
	result := slots.Describe(a.boot0, a.bootSt, a.version())
	if note := a.takeFailureNote(); note != "" {
		result = note
	}
	a.mu.Lock()
	a.result = result
	a.mu.Unlock()
	if a.bootSt == nil || a.inRecovery() {
		return nil
	}
	slot := a.boot0.Slot
	switch {
	case a.boot0.Mode == slots.ModeTrial:
		if err := a.health(); err != nil {
			a.say("trial boot of %s in slot %s failed its health check: %v; marking it bad and rebooting into slot %s", a.version(), slot, err, slot.Other())
			if nerr := a.noteFailure(slot, "failed its health check ("+err.Error()+")"); nerr != nil {
				a.log.Warn("the failure will not be reported after the reboot", "err", nerr)
			}
			if _, werr := a.esp.MarkBad(slot); werr != nil {
				return werr
			}
			a.wd.Disarm()
			return a.requestShutdown(pid1.Reboot)
		}
		if _, err := a.esp.Commit(slot); err != nil {
			return err
		}
		if err := a.wd.Disarm(); err != nil {
			a.log.Warn("watchdog not disarmed", "err", err)
		}
		a.setResult(fmt.Sprintf("Trial boot of %s in slot %s passed its health checks and was committed (%s tries were left).", a.version(), slot, a.boot0.Tries))
	case slot != a.bootSt.Default:
		// GRUB fell back: the default slot failed. Make it official so
		// GRUB stops trying it, and keep this slot as the default.
		if _, err := a.esp.RecordFallback(a.bootSt.Default, slot); err != nil {
			return err
		}
	case a.boot0.EnvFrom == slots.Backup:
		if _, err := a.esp.Repair(); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.committed = true
	a.mu.Unlock()
	return nil
}

func (a *agent) setResult(s string) {
	a.mu.Lock()
	a.result = s
	a.mu.Unlock()
}

// healthCheck is what a trial boot must pass: data mounted, configuration
// loaded, API answering over TLS with the box's own certificate, the
// application (if one is installed) passing its health check.
func (a *agent) healthCheck() error {
	if err := fault("health"); err != nil {
		return err
	}
	if !a.dataMounted() {
		return errors.New("the data partition is not mounted")
	}
	if a.users == nil || !a.users.Exists() {
		return errors.New("the configuration is not loaded")
	}
	if a.id == nil || a.api == nil {
		return errors.New("the API is not running")
	}
	pool := x509.NewCertPool()
	pool.AddCert(a.id.TLS.Leaf)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	var err error
	for i := 0; i < 20; i++ {
		a.wd.Pet()
		var resp *http.Response
		if resp, err = c.Get("https://127.0.0.1:443/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a.appHealthy()
			}
			err = fmt.Errorf("/healthz answered %s", resp.Status)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("the API does not answer: %w", err)
}

func (a *agent) version() string {
	if a.base == nil {
		return "unknown"
	}
	return a.base.Version
}

func hardwareSerial() string {
	s := readTrim("/sys/class/dmi/id/product_serial")
	switch strings.ToLower(s) {
	case "", "0", "none", "not specified", "default string", "to be filled by o.e.m.":
		return ""
	}
	return s
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func uptime() float64 {
	// /proc/uptime has hundredths; the agent's ready line wants them.
	if f := strings.Fields(readTrim("/proc/uptime")); len(f) > 0 {
		var u float64
		fmt.Sscanf(f[0], "%g", &u)
		return u
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return float64(si.Uptime)
}

// cpuWaited reads from /proc/stat how long the CPUs were idle and how long
// of that they waited for I/O since boot, in seconds summed over them.
func cpuWaited() (idle, iowait float64) {
	// "cpu  user nice system idle iowait ...", in USER_HZ, 100 on Linux.
	f := strings.Fields(strings.SplitN(readTrim("/proc/stat"), "\n", 2)[0])
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0
	}
	var i, w float64
	fmt.Sscanf(f[4], "%g", &i)
	fmt.Sscanf(f[5], "%g", &w)
	return (i + w) / 100, w / 100
}
