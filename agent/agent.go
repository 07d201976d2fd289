package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"keel.dev/keel/agent/access"
	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/apps"
	"keel.dev/keel/agent/audit"
	"keel.dev/keel/agent/backup"
	"keel.dev/keel/agent/blockdev"
	"keel.dev/keel/agent/certs"
	"keel.dev/keel/agent/coldplug"
	"keel.dev/keel/agent/config"
	"keel.dev/keel/agent/console"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/floatip"
	"keel.dev/keel/agent/identity"
	"keel.dev/keel/agent/install"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/peerkey"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/agent/slots"
	"keel.dev/keel/agent/supervisor"
	"keel.dev/keel/agent/timesync"
	"keel.dev/keel/agent/updates"
	"keel.dev/keel/agent/users"
	"keel.dev/keel/agent/watchdog"
	"keel.dev/keel/agent/webui"
	"keel.dev/keel/image/bootstate"
	"keel.dev/keel/image/manifest"
)

// Where things are mounted and kept on the box.
const (
	espDir      = "/run/keel/esp"
	baseDir     = "/run/keel/base"
	dataDir     = "/data"
	keelDir     = dataDir + "/keel"
	configPath  = keelDir + "/config.json"
	usersPath   = keelDir + "/users.json"
	auditPath   = keelDir + "/audit.jsonl"
	certsPath   = keelDir + "/certs.json"
	accessPath  = keelDir + "/access.json"
	peerKeyPath = keelDir + "/peer.key"
	preseedPath = keelDir + "/preseed.json"
	identityDir = keelDir + "/identity"
	// The users file is mirrored on the ESP so that recovery mode can still
	// authenticate the operator when the data partition is damaged.
	usersMirror = espDir + "/EFI/keel/users.json"
	// recoveryIdentityDir keeps the TLS identity recovery mode serves
	// with when the data partition cannot be used.
	recoveryIdentityDir = espDir + "/EFI/keel/recovery-identity"
)

// agent is the state of PID 1 during boot and while it runs. Each field has
// one owner: the phase that sets it.
type agent struct {
	log *slog.Logger
	con io.Writer
	// storage is closed once the storage drivers the boot held back are
	// loaded (releaseStorage), or there were none.
	storage chan struct{}
	// console is con when PID 1 runs on a real box; the shutdown flushes
	// it.
	console *pid1.Console
	// blocks finds partitions, on the boot disk once "boot disk" ran.
	blocks blockdev.Finder
	// apiLn is port 443, bound by its own phase before the application
	// starts and served by the API phase.
	apiLn net.Listener
	sup   *supervisor.Supervisor
	ctx   context.Context
	stop  context.CancelFunc

	started time.Time
	boot0   slots.Boot
	bootSt  *bootstate.State // as GRUB left it, before the agent changed anything
	esp     *slots.Store
	loader  *coldplug.Loader
	web     *webui.UI
	audit   *audit.Log
	certs   *certs.Store
	access  *access.Store
	peerKey *peerkey.Store
	backups *backup.Service
	jobs    *install.Jobs // every job: installs, backups, restores, resets, syncs
	updates *updates.Manager
	// failover is the pair this box is in (or may join); nil without the
	// data partition or an identity.
	failover *failover.Service
	// logRing keeps the agent's log for the console menu.
	logRing  *console.Ring
	selftest *selfTest
	// restored is a restore applied at this boot, whose network change
	// may wait for confirmation.
	restored *backup.Journal
	base     *manifest.Base
	kernel   string
	serial   string
	cfg      config.Config
	users    *users.Store
	id       *identity.Identity
	api      *api.Server
	network  *netcfg.Manager
	clock    *timesync.Service
	floating *floatip.Manager
	wd       *watchdog.Watchdog // armed during a trial boot until the commit
	// health is what a trial boot must pass before its commit: healthCheck
	// on the box; tests swap it.
	health   func() error
	shutdown chan pid1.Action

	// installer is set once the API serves installs; nil without trusted
	// keys.
	installer *install.Installer
	// apps is the application runtime once the application phase made it
	// (before the API starts); nil when the data partition is not mounted.
	apps *apps.Manager

	mu        sync.Mutex
	mounts    []string // in mount order; unmounted in reverse at shutdown
	recovery  string   // why the box is in recovery mode; "" when it is not
	result    string   // boot.last_result
	committed bool
	dataState string
}

func newAgent(log *slog.Logger, con io.Writer) *agent {
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{
		log: log, con: con, ctx: ctx, stop: cancel, blocks: blockdev.Default(),
		sup:      &supervisor.Supervisor{Log: log},
		started:  time.Now(),
		esp:      slots.NewStore(espDir),
		shutdown: make(chan pid1.Action, 1),
		jobs:     install.NewJobs(install.DefaultJobs),
		storage:  make(chan struct{}),
	}
	a.health = a.healthCheck
	a.selftest = &selfTest{a: a}
	return a
}

func (a *agent) stopServices() { a.stop() }

// say writes a line for the operator on the consoles.
func (a *agent) say(format string, args ...any) {
	fmt.Fprintf(a.con, "keel: "+format+"\n", args...)
}

func (a *agent) setRecovery(why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.recovery == "" {
		a.recovery = why
	}
}

// addMount records a mount for the shutdown; phases mount concurrently.
func (a *agent) addMount(dir string) {
	a.mu.Lock()
	a.mounts = append(a.mounts, dir)
	a.mu.Unlock()
}

func (a *agent) mountList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.mounts)
}

func (a *agent) inRecovery() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.recovery != ""
}

// requestShutdown asks PID 1's main loop to shut down; later requests while
// one is pending are ignored.
func (a *agent) requestShutdown(act pid1.Action) error {
	select {
	case a.shutdown <- act:
	default:
	}
	return nil
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
