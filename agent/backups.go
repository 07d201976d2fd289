package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/agent/backup"
	"keel.dev/keel/agent/netcfg"
	"keel.dev/keel/agent/pid1"
	"keel.dev/keel/agent/reset"
	"keel.dev/keel/image/kpkg"
)

const (
	// backupDir keeps the automatic backups and their settings.
	backupDir = keelDir + "/backup"
	// restoreDir is where a restore is staged, with its journal.
	restoreDir = keelDir + "/restore"
	// restoreConfirmTimeout is how long after the boot that applied a
	// restore its network change waits for confirmation.
	restoreConfirmTimeout = 10 * time.Minute
)

// backupSections is what a backup holds and a restore puts back. Left
// out, on purpose: the install history and the slots' state (they
// describe this box's disk, not its configuration), the serial kept in
// config.json, the clock's drift (rtc.json), pending installs and boot
// notes, the preseeded password, and the ESP's copies (remade at boot).
func (a *agent) backupSections(includeHistory bool) []backup.Section {
	s := []backup.Section{
		{Name: "network", Kind: backup.Config, Path: networkPath}, // with the host name, NTP servers and floating addresses
		{Name: "users", Kind: backup.Config, Path: usersPath},     // with the account policy
		{Name: "certificates", Kind: backup.Config, Path: certsPath},
		{Name: "access", Kind: backup.Config, Path: accessPath},
		{Name: "peer-key", Kind: backup.Config, Path: peerKeyPath},
		{Name: "updates", Kind: backup.Config, Path: updatesDir + "/config.json"},
		{Name: "backup-settings", Kind: backup.Config, Path: backupDir + "/settings.json"},
		{Name: "identity", Kind: backup.Identity, Path: identityDir},
		{Name: "audit", Kind: backup.History, Path: auditPath},
		{Name: "audit-previous", Kind: backup.History, Path: auditPath + ".1"},
	}
	if name := a.appName(); name != "" {
		dir := filepath.Join(appDataRoot, name)
		s = append(s,
			// .keel-sync is a failover sync's stage and snapshots, not
			// the application's.
			backup.Section{Name: "app-data:" + name, Kind: backup.AppData, Path: dir, Store: "files", Skip: []string{"history", ".keel-sync"},
				Discard: []string{filepath.Join(appDataRoot, ".volumes", name+".ext4")}},
			backup.Section{Name: "app-history:" + name, Kind: backup.History, Path: filepath.Join(dir, "history")},
		)
	}
	return s
}

func (a *agent) appName() string {
	if a.apps == nil {
		return ""
	}
	return a.apps.Status().Name
}

func (a *agent) backupMeta() (serial, base string, app *backup.App) {
	if a.apps != nil {
		if st := a.apps.Status(); st.Name != "" {
			app = &backup.App{Name: st.Name, Version: st.Version}
		}
	}
	return a.serial, a.version(), app
}

// compatibleBackup refuses a backup from a newer base or application than
// this box runs: its files may say what this software cannot read.
func (a *agent) compatibleBackup(m *backup.Manifest) error {
	if newer(m.Base, a.version()) {
		return fmt.Errorf("the backup was made on base %s, newer than this appliance's %s: install base %s or later first, then restore", m.Base, a.version(), m.Base)
	}
	if m.App != nil && a.apps != nil {
		if st := a.apps.Status(); st.Name == m.App.Name && newer(m.App.Version, st.Version) {
			return fmt.Errorf("the backup was made with %s %s, newer than this appliance's %s: install %s %s or later first, then restore", m.App.Name, m.App.Version, st.Version, m.App.Name, m.App.Version)
		}
	}
	return nil
}

func newer(a, b string) bool {
	va, err1 := kpkg.ParseVersion(a)
	vb, err2 := kpkg.ParseVersion(b)
	return err1 == nil && err2 == nil && va.Compare(vb) > 0
}

// adjustRestore fits a staged backup's network configuration to this
// box's links: an interface is placed by its name, then by its MAC; one
// that fits neither stays in the configuration, unused, and is reported.
// A restore that changes the network waits for confirmation after the
// boot that applies it (Journal.Network).
func (a *agent) adjustRestore(st *backup.Staged, j *backup.Journal) ([]string, error) {
	path := st.SectionPath("network")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c netcfg.Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("the backup's network configuration cannot be read: %v", err)
	}
	links, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	notes := placeInterfaces(&c, links)
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, append(out, '\n'), 0o600); err != nil {
		return nil, err
	}
	cur, err := os.ReadFile(networkPath)
	if err == nil && string(cur) == string(append(out, '\n')) {
		return notes, nil
	}
	// The network changes: keep what is in force now to come back to.
	prev := filepath.Join(st.Dir, "network.previous.json")
	if err != nil {
		cur = []byte("{}\n") // none yet: DHCP on every link
	}
	if err := atomicfile.Write(prev, cur, 0o600); err != nil {
		return nil, err
	}
	j.Network = &backup.NetworkChange{Token: backup.NewToken(), PreviousPath: prev}
	notes = append(notes, "the network configuration changes: after the restart, confirm it within 10 minutes (POST /api/v1/network/confirm with the network_confirm_token, or the Networking page), or the one in force now comes back")
	return notes, nil
}

// placeInterfaces fits a configuration's interfaces to links: by name,
// then by MAC; one that fits neither stays, unused, and is reported.
func placeInterfaces(c *netcfg.Config, links []net.Interface) []string {
	byName, byMAC := map[string]net.Interface{}, map[string]net.Interface{}
	for _, l := range links {
		byName[l.Name] = l
		if len(l.HardwareAddr) > 0 {
			byMAC[strings.ToLower(l.HardwareAddr.String())] = l
		}
	}
	var notes []string
	for i := range c.Interfaces {
		it := &c.Interfaces[i]
		mac := strings.ToLower(it.MAC)
		l, named := byName[it.Name]
		switch {
		case it.Name != "" && named:
			if mac != "" && mac != strings.ToLower(l.HardwareAddr.String()) {
				notes = append(notes, fmt.Sprintf("interface %s is placed by its name on this appliance's %s (%s); the backup's MAC %s is not here", it.Name, l.Name, l.HardwareAddr, it.MAC))
				it.MAC = ""
			}
		case mac != "":
			if l, ok := byMAC[mac]; ok {
				notes = append(notes, fmt.Sprintf("interface %s is placed by its MAC %s on this appliance's %s", it.Name, it.MAC, l.Name))
				it.Name = l.Name
				break
			}
			fallthrough
		default:
			notes = append(notes, fmt.Sprintf("interface %s (MAC %s) of the backup is not on this appliance: it stays in the network configuration, unused, for hardware that has it", it.Name, it.MAC))
		}
	}
	return notes
}

// applyRestore puts a staged restore in place, at boot before any
// subsystem reads its file; a power cut in the middle repeats it.
func (a *agent) applyRestore() {
	j, err := backup.LoadJournal(restoreDir)
	if err != nil {
		a.say("a restore could not be resumed: %v; the configuration from before it is in use", err)
		return
	}
	if j == nil {
		return
	}
	if j.State == backup.StateStaged {
		a.say("restoring a backup: %s", strings.Join(j.Summary, ", "))
		if err := j.Apply(restoreDir); err != nil {
			a.say("the restore could not be finished (%v); it is tried again at the next boot", err)
			return
		}
		a.say("the backup was restored")
	}
	a.restored = j
	if j.Network == nil {
		os.RemoveAll(restoreDir)
	}
}

// awaitRestoredNetwork makes a restored network configuration wait for
// its confirmation, as a network change does.
func (a *agent) awaitRestoredNetwork(nm *netcfg.Manager) {
	j := a.restored
	if j == nil || j.Network == nil {
		return
	}
	var prev netcfg.Config
	if b, err := os.ReadFile(j.Network.PreviousPath); err == nil {
		json.Unmarshal(b, &prev)
	}
	a.say("the restored network configuration waits for its confirmation: POST /api/v1/network/confirm with the token the restore gave, within %s", restoreConfirmTimeout)
	nm.AwaitConfirmation(prev, j.Network.Token, restoreConfirmTimeout, func(confirmed bool) {
		if confirmed {
			a.log.Info("the restored network configuration was confirmed")
		} else {
			a.say("the restored network configuration was not confirmed in time: the one from before the restore is back")
		}
		os.RemoveAll(restoreDir)
	})
}

// espKeelDir is the ESP's folder of keel's own files.
const espKeelDir = espDir + "/EFI/keel"

// runPendingReset carries out a factory reset asked for before the
// restart, before the data partition is mounted; a reset that cannot
// finish keeps the old data partition unmounted, so the box never boots
// with the configuration it was asked to forget.
func (a *agent) runPendingReset(dev string, size int64) error {
	st := reset.Store{Dir: espKeelDir}
	r, err := st.Pending()
	if err != nil || r == nil {
		return err
	}
	a.say("factory reset (%s) in progress: wiping the data partition; leave the power on", r.Mode)
	rep, err := st.Run(r, reset.Device{Path: dev, Size: size}, []string{usersMirror, recoveryIdentityDir}, func(p float64) {
		a.say("factory reset: %d%%", int(p*100))
	})
	if err != nil {
		a.say("the factory reset could not finish: %v; it is tried again at the next boot", err)
		return err
	}
	a.say("%s", rep.Text())
	if r.Then == reset.PowerOff {
		// At once, before a new data file system and a first-boot
		// password are made: the next owner's first boot makes them.
		a.say("powering off for the hardware's return")
		a.halt(pid1.PowerOff)
	}
	return nil
}
