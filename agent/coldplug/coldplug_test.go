package coldplug

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	testRelease = "6.1.0-test"

	modulesDep = `kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/nls/nls_iso8859-1.ko:
kernel/drivers/net/e1000.ko:
kernel/drivers/broken.ko:
kernel/drivers/needs_broken.ko: kernel/drivers/broken.ko
`
	modulesAlias = `# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias fs-ext4 ext4
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v0000DEADd*sv*sd*bc*sc*i* needs_broken
alias acpi*:LNXPWRBN:* button
`
	modulesSoftdep = `softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c post: nonexistent
`
	modulesBuiltin = "kernel/drivers/tty/serial/8250/8250.ko\n"
)

// fakeSystem is a root with lib/modules and a sys tree whose devices change
// as modules "load", like the kernel's.
type fakeSystem struct {
	t    *testing.T
	root string

	// mu guards the fields below: with Workers > 1 insert runs on
	// several goroutines.
	mu       sync.Mutex
	inserted []string
	// delay is how long a module's insertion takes (its probe).
	delay map[string]time.Duration
	// started and ended record when each insertion began and finished;
	// active and maxActive count concurrent insertions.
	started, ended    map[string]time.Time
	calls             map[string]int
	params            map[string]string // each insertion's parameters
	active, maxActive int
	// exist are modules the kernel already has (finit_module: EEXIST).
	exist map[string]bool
	// broken fail to load.
	broken map[string]bool
	// reveals maps a module to the devices its probe adds.
	reveals map[string]map[string]string
	// events, when set, receives the add event of every device a probe
	// adds; with eventsOnly the device is not written to sysfs, so only
	// a loader that follows events finds it.
	events     *fakeEvents
	eventsOnly bool
}

// fakeEvents is a uevent subscription fed by the fake kernel.
type fakeEvents struct {
	mu       sync.Mutex
	queue    []device
	overflow bool
}

func (e *fakeEvents) pending() ([]device, bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	q, o := e.queue, e.overflow
	e.queue, e.overflow = nil, false
	return q, o, nil
}

func (e *fakeEvents) wait() (device, bool, error) { return device{}, false, errors.New("closed") }
func (e *fakeEvents) close()                      {}

func newFakeSystem(t *testing.T) *fakeSystem {
	t.Helper()
	fs := &fakeSystem{
		t:       t,
		root:    t.TempDir(),
		exist:   map[string]bool{"virtio_ring": true},
		delay:   map[string]time.Duration{},
		started: map[string]time.Time{},
		ended:   map[string]time.Time{},
		calls:   map[string]int{},
		params:  map[string]string{},
		broken:  map[string]bool{"broken": true},
		reveals: map[string]map[string]string{
			"virtio_pci": {
				"pci0000:00/0000:00:03.0/virtio0": "virtio:d00000001v00001AF4",
				"pci0000:00/0000:00:04.0/virtio1": "virtio:d00000002v00001AF4",
			},
		},
	}
	dir := filepath.Join(fs.root, "lib", "modules", testRelease)
	fs.write(filepath.Join(dir, "modules.dep"), modulesDep)
	fs.write(filepath.Join(dir, "modules.alias"), modulesAlias)
	fs.write(filepath.Join(dir, "modules.softdep"), modulesSoftdep)
	fs.write(filepath.Join(dir, "modules.builtin"), modulesBuiltin)
	for dev, alias := range map[string]string{
		"pci0000:00/0000:00:03.0":   "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
		"pci0000:00/0000:00:04.0":   "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
		"pci0000:00/0000:00:05.0":   "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
		"pci0000:00/0000:00:06.0":   "pci:v0000DEADd0000BEEFsv00000000sd00000000bc00sc00i00",
		"pci0000:00/0000:00:07.0":   "pci:v0000FFFFd0000FFFFsv00000000sd00000000bc00sc00i00",
		"LNXSYSTM:00/LNXPWRBN:00":   "acpi:LNXPWRBN:",
		"platform/serial8250/tty/x": "", // empty modalias: ignored
	} {
		fs.device(dev, alias)
	}
	return fs
}

func (fs *fakeSystem) write(p, content string) {
	fs.t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		fs.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		fs.t.Fatal(err)
	}
}

// device adds a device under /sys/devices and links it where sysfs lists
// it: under its bus (named by its modalias here), or in the tty class.
func (fs *fakeSystem) device(dev, modalias string) {
	fs.t.Helper()
	fs.write(filepath.Join(fs.root, "sys", "devices", dev, "modalias"), modalias+"\n")
	list := filepath.Join(fs.root, "sys", "class", "tty")
	if bus, _, ok := strings.Cut(modalias, ":"); ok {
		list = filepath.Join(fs.root, "sys", "bus", bus, "devices")
	}
	if err := os.MkdirAll(list, 0o755); err != nil {
		fs.t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(fs.root, "sys", "devices", dev), filepath.Join(list, filepath.Base(dev))); err != nil {
		fs.t.Fatal(err)
	}
}

// insert is the fake finit_module.
func (fs *fakeSystem) insert(file, params string) error {
	want := filepath.Join(fs.root, "lib", "modules", testRelease, "kernel") + string(filepath.Separator)
	if !strings.HasPrefix(file, want) || !strings.HasSuffix(file, ".ko") {
		return fmt.Errorf("unexpected module file %s", file)
	}
	name := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(file), ".ko"), "-", "_")
	fs.mu.Lock()
	fs.calls[name]++
	fs.params[name] = params
	switch {
	case fs.exist[name]:
		fs.mu.Unlock()
		return fmt.Errorf("finit_module %s: %w", name, unix.EEXIST)
	case fs.broken[name]:
		fs.mu.Unlock()
		return fmt.Errorf("finit_module %s: %w", name, unix.ENOEXEC)
	}
	// Like the kernel, a second load of a module still initialising
	// gets EEXIST.
	fs.exist[name] = true
	fs.started[name] = time.Now()
	fs.active++
	fs.maxActive = max(fs.maxActive, fs.active)
	d := fs.delay[name]
	fs.mu.Unlock()

	time.Sleep(d) // the probe

	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.active--
	fs.ended[name] = time.Now()
	fs.inserted = append(fs.inserted, name)
	// In path order, as the kernel adds them and a walk finds them: a
	// map's order made the events' order, and the load order, random.
	for _, dev := range slices.Sorted(maps.Keys(fs.reveals[name])) {
		alias := fs.reveals[name][dev]
		if fs.events != nil {
			fs.events.mu.Lock()
			fs.events.queue = append(fs.events.queue, device{alias: alias, path: "/devices/" + dev})
			fs.events.mu.Unlock()
		}
		if !fs.eventsOnly {
			fs.device(dev, alias)
		}
	}
	return nil
}

func (fs *fakeSystem) loader() *Loader {
	fs.t.Helper()
	l, err := New(Options{Root: fs.root, Release: testRelease, Insert: fs.insert})
	if err != nil {
		fs.t.Fatal(err)
	}
	return l
}

// fakeSystemModules is what a coldplug of newFakeSystem inserts, in order.
var fakeSystemModules = []string{
	// Round 1, PCI: virtio_pci after its dependencies (virtio_ring was
	// already in the kernel), e1000, and needs_broken fails.
	"virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci",
	"e1000",
	// Round 2: the virtio devices virtio_pci revealed.
	"failover", "net_failover", "virtio_net",
	"virtio_blk",
}

func TestColdplugLoadsInDependencyOrderUntilStable(t *testing.T) {
	fs := newFakeSystem(t)
	l := fs.loader()
	loaded, err := l.Coldplug(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := fakeSystemModules
	if !reflect.DeepEqual(loaded, want) {
		t.Errorf("loaded %v\nwant   %v", loaded, want)
	}
	if !reflect.DeepEqual(fs.inserted, want) {
		t.Errorf("inserted %v, want %v", fs.inserted, want)
	}
	failed := l.Failed()
	for _, m := range []string{"broken", "needs_broken"} {
		if failed[m] == nil {
			t.Errorf("%s: no failure recorded (%v)", m, failed)
		}
	}
	if !errors.Is(failed["broken"], unix.ENOEXEC) {
		t.Errorf("broken: %v, want ENOEXEC", failed["broken"])
	}
	// "button" matches the ACPI device but is not in modules.dep.
	if !errors.Is(failed["button"], ErrUnknown) {
		t.Errorf("button: %v, want ErrUnknown", failed["button"])
	}

	// Nothing changed: a second coldplug loads nothing and does not retry
	// the broken module.
	fs.inserted = nil
	again, err := l.Coldplug(context.Background())
	if err != nil || len(again) != 0 || len(fs.inserted) != 0 {
		t.Errorf("second coldplug: loaded %v inserted %v err %v", again, fs.inserted, err)
	}
}

func TestLoadByNameWithSoftdeps(t *testing.T) {
	fs := newFakeSystem(t)
	l := fs.loader()
	ctx := context.Background()
	if err := l.Load(ctx, "ext4"); err != nil {
		t.Fatal(err)
	}
	want := []string{"crc32c_generic", "jbd2", "mbcache", "crc16", "ext4"}
	if !reflect.DeepEqual(fs.inserted, want) {
		t.Errorf("inserted %v, want %v", fs.inserted, want)
	}
	// Loaded for no device, they ask for async_probe only so that their
	// insert does not wait for other drivers' background probes.
	for _, m := range want {
		if fs.params[m] != "async_probe" {
			t.Errorf("%s inserted with %q, want async_probe", m, fs.params[m])
		}
	}
	for _, name := range []string{"fs-ext4", "ext4", "8250", "nls-iso8859-1", "nls_iso8859_1"} {
		if err := l.Load(ctx, name); err != nil {
			t.Errorf("Load(%q): %v", name, err)
		}
	}
	if got := fs.inserted[len(fs.inserted)-1]; got != "nls_iso8859_1" || len(fs.inserted) != len(want)+1 {
		t.Errorf("inserted %v, want one more: nls_iso8859_1", fs.inserted)
	}
	if err := l.Load(ctx, "nope"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Load(nope) = %v, want ErrUnknown", err)
	}
	if err := l.Load(ctx, "needs_broken"); !errors.Is(err, unix.ENOEXEC) {
		t.Errorf("Load(needs_broken) = %v, want ENOEXEC", err)
	}
}

func TestLoadedModulesAreNotInsertedAgain(t *testing.T) {
	fs := newFakeSystem(t)
	fs.write(filepath.Join(fs.root, "sys", "module", "e1000", "initstate"), "live\n")
	l := fs.loader()
	if _, err := l.Coldplug(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, m := range fs.inserted {
		if m == "e1000" {
			t.Errorf("e1000 inserted although /sys/module/e1000 is live: %v", fs.inserted)
		}
	}
}

func TestColdplugHonoursContext(t *testing.T) {
	fs := newFakeSystem(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fs.loader().Coldplug(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Coldplug with cancelled context = %v", err)
	}
	if len(fs.inserted) != 0 {
		t.Errorf("inserted %v after cancel", fs.inserted)
	}
}

func TestNewNeedsModulesDep(t *testing.T) {
	_, err := New(Options{Root: t.TempDir(), Release: testRelease})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New without modules.dep = %v, want ErrNotExist", err)
	}
}

func TestParseUevent(t *testing.T) {
	msg := []byte("add@/devices/pci0000:00/0000:00:03.0/virtio0\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:03.0/virtio0\x00SUBSYSTEM=virtio\x00MODALIAS=virtio:d00000001v00001AF4\x00SEQNUM=1234\x00")
	action, dev := parseUevent(msg)
	if want := (device{alias: "virtio:d00000001v00001AF4", path: "/devices/pci0000:00/0000:00:03.0/virtio0"}); action != "add" || dev != want {
		t.Errorf("parseUevent = %q, %+v", action, dev)
	}
	if a, d := parseUevent([]byte("libudev\x00\xfe\xed")); a != "" || d != (device{}) {
		t.Errorf("libudev message parsed as %q, %+v", a, d)
	}
}

func TestLoadAliasSucceedsIfOneProviderLoads(t *testing.T) {
	fs := newFakeSystem(t)
	fs.write(filepath.Join(fs.root, "lib", "modules", testRelease, "modules.dep"), modulesDep+"kernel/arch/x86/crypto/crc32c-intel.ko:\n")
	fs.write(filepath.Join(fs.root, "lib", "modules", testRelease, "modules.alias"), modulesAlias+"alias crypto-crc32c crc32c_intel\n")
	fs.broken["crc32c_intel"] = true
	l := fs.loader()
	if err := l.Load(context.Background(), "crypto-crc32c"); err != nil {
		t.Errorf("Load(crypto-crc32c) = %v, want success through crc32c_generic", err)
	}
	if l.Failed()["crc32c_intel"] == nil {
		t.Error("crc32c_intel failure not recorded")
	}
	if err := l.Load(context.Background(), "crc32c_intel"); err == nil {
		t.Error("Load(crc32c_intel) by name succeeded")
	}
}

// With a subscription, sysfs is walked once: the devices the first round's
// drivers reveal are matched from their add events (here they exist only
// as events, so a second walk would not find them).
func TestColdplugFollowsEventsAfterOneWalk(t *testing.T) {
	fs := newFakeSystem(t)
	fs.events, fs.eventsOnly = &fakeEvents{}, true
	l := fs.loader()
	l.sub = fs.events
	loaded, err := l.Coldplug(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := fakeSystemModules; !reflect.DeepEqual(loaded, want) {
		t.Errorf("loaded %v\nwant   %v", loaded, want)
	}
	if l.takeSubscription() != fs.events || l.subscription() != nil {
		t.Error("Watch cannot take the subscription over")
	}
}

// Lost events (the socket's buffer overflowed) make the next round walk
// sysfs again instead of missing devices, whether a round's drivers load
// one at a time or concurrently (following events as they load).
func TestColdplugWalksAgainAfterLostEvents(t *testing.T) {
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			fs := newFakeSystem(t)
			lost := &fakeEvents{overflow: true} // the probes' events never arrive
			l, err := New(Options{Root: fs.root, Release: testRelease, Insert: fs.insert, Workers: workers})
			if err != nil {
				t.Fatal(err)
			}
			l.sub = lost
			loaded, err := l.Coldplug(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(loaded, "virtio_net") || !slices.Contains(loaded, "virtio_blk") {
				t.Errorf("loaded %v: the devices behind the lost events were missed", loaded)
			}
		})
	}
}

// Storage drivers probe in the background (async_probe): their probes wait
// on hardware and only the boot disk's lookup, which waits by itself,
// needs them. The others probe before their insert returns, so the links
// the network phase configures are there when the coldplug ends.
func TestStorageDriversProbeAsynchronously(t *testing.T) {
	fs := newFakeSystem(t)
	if _, err := fs.loader().Coldplug(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"virtio_blk": "async_probe", "virtio_net": "", "e1000": "", "virtio_pci": ""}
	for m, p := range want {
		if got, ok := fs.params[m]; !ok || got != p {
			t.Errorf("%s inserted with %q (inserted: %v), want %q", m, got, ok, p)
		}
	}
}
