package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"

	"keel.dev/keel/agent/install"
	"keel.dev/keel/agent/inventory"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/agent/supervisor"
	"keel.dev/keel/agent/updates"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/kpkg"
)

// trustedKeysPath is where the initramfs carries the vendor's public keys
// (`make initramfs` puts build/keys/vendor.pub there).
const trustedKeysPath = "/etc/keel/trusted.pub"

// startInstaller registers POST /api/v1/install and the jobs endpoints, for
// base and app packages. A base image without trusted keys cannot check
// signatures, so it installs nothing, and says so. The online update
// endpoints come next; when they cannot start, installs still work, and
// the reason is logged on its own.
func (a *agent) startInstaller() error {
	if a.api == nil {
		return errors.New("the API is not running")
	}
	pem, err := os.ReadFile(trustedKeysPath)
	if err != nil {
		return fmt.Errorf("no trusted vendor keys in this base image (%s): package installs are disabled", trustedKeysPath)
	}
	keys, err := kpkg.ParsePublicKeys(pem)
	if err != nil {
		return fmt.Errorf("trusted vendor keys %s: %w", trustedKeysPath, err)
	}
	inv := a.inventory()
	inv.Routes(a.api)
	in := &install.Installer{
		Trusted:   keys,
		Hardware:  readTrim("/sys/class/dmi/id/product_name"),
		Installed: inv.Versions,
		Inventory: inv,
		Slots:     a.esp,
		Running:   a.boot0.Slot,
		OpenSlot:  install.BlockDevices(a.blocks),
		Reboot:    func() error { return a.requestShutdown(pid1.Reboot) },
		Log:       a.log,
		Jobs:      a.jobs,
	}
	if a.backups != nil {
		in.BeforeInstall = a.backups.BeforeInstall
	}
	// App packages need the application runtime (and so the data
	// partition); without it they are refused.
	if m := a.apps; m != nil {
		in.AppSlots = m.Slots
		in.OpenAppSlot = install.AppBlockDevices(a.blocks)
		in.SwitchApp = m.Switch
	}
	// Bundles keep the packages that follow a base on the data partition
	// across the base's reboot.
	if a.dataMounted() {
		in.PendingDir = pendingDir
	}
	in.Routes(a.api)
	a.installer = in
	// Installs work without the update endpoints.
	if err := a.startUpdates(in, inv, keys); err != nil {
		a.log.Error("online updates and download keys are disabled", "err", err)
	}
	return nil
}

// inventoryPath is the install history: what came when, by which path.
const inventoryPath = keelDir + "/inventory.json"

// inventory is what the box runs (the running base slot's manifest, the
// committed application) and the install history, kept on the data
// partition when it is mounted. A damaged history is reported and starts
// again empty: it only holds waits back.
func (a *agent) inventory() *inventory.Inventory {
	inv := &inventory.Inventory{
		Base: func() (inventory.Running, bool) {
			v, err := kpkg.ParseVersion(a.version())
			if err != nil {
				return inventory.Running{}, false
			}
			name := "keel"
			if a.base != nil && a.base.Name != "" {
				name = a.base.Name
			}
			return inventory.Running{Name: name, Version: v}, true
		},
	}
	if m := a.apps; m != nil {
		inv.App = func() (inventory.Running, bool) {
			n, v, ok := m.Installed()
			return inventory.Running{Name: n, Version: v}, ok
		}
	}
	if a.dataMounted() {
		inv.Path = inventoryPath
	}
	if err := inv.Load(); err != nil {
		a.log.Warn("install history", "err", err)
	}
	return inv
}

// pendingDir holds a bundle's packages that install after its base.
const pendingDir = keelDir + "/pending"

// resumePending goes on with an uploaded bundle once the running slot is
// committed: the packages after its base install now, in the background.
// During a trial boot that failed nothing resumes (the box is rebooting).
func (a *agent) resumePending() error {
	a.mu.Lock()
	committed := a.committed
	a.mu.Unlock()
	if a.installer == nil || !committed {
		return nil
	}
	supervisor.Go(a.log, "resume bundle", func() {
		if err := a.installer.ResumePending(a.ctx); err != nil {
			a.log.Warn("the uploaded bundle did not resume", "err", err)
		}
	})
	return nil
}

// updatesDir keeps the update server settings and the last verified
// catalog.
const updatesDir = keelDir + "/updates"

// startUpdates registers the online update and download-key endpoints.
// They keep their state on the data partition. startAPI calls it only
// with an identity (a.id).
func (a *agent) startUpdates(in *install.Installer, inv *inventory.Inventory, keys []ed25519.PublicKey) error {
	if !a.dataMounted() {
		return errors.New("the data partition is not mounted")
	}
	m := &updates.Manager{
		Dir: updatesDir, Trusted: keys, Serial: a.serial, Hardware: in.Hardware,
		Installed: inv.Installed, LastInstalls: inv.LastInstalls,
		Installer: func(ctx context.Context, body io.Reader, e catalog.Entry, rebootAfter <-chan struct{}) (string, string, error) {
			j, err := in.Start(ctx, body, install.Options{Size: e.Size, RebootAfter: rebootAfter, Via: inventory.Online,
				Expect: &install.Expected{Kind: e.Kind, Name: e.Name, Version: e.Version}})
			id := ""
			if j != nil {
				id = j.ID()
			}
			if err != nil {
				return id, "", err
			}
			return id, j.Status().Message, nil
		},
		InstallStatus: install.HTTPStatus,
		Identity:      a.id.Key,
		Synced:        func() bool { return a.clock != nil && a.clock.Synced() },
		Log:           a.log.With("subsystem", "updates"),
	}
	if err := m.Load(); err != nil {
		return err
	}
	a.updates = m
	m.Routes(a.api)
	return nil
}
