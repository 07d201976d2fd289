package main

import (
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"keel.dev/keel/image/appimage"
	"keel.dev/keel/image/catalog"
	"keel.dev/keel/image/downloadkey"
	"keel.dev/keel/image/kpkg"
)

// releasePackage is one package of the demo release.
type releasePackage struct {
	Kind     kpkg.Kind
	Name     string
	Version  string
	Requires []string
	// Wait is how long a box waits after installing this package before
	// the next of its kind; `image release -wait VERSION=DURATION`
	// overrides it for app versions.
	Wait  time.Duration
	Notes string
}

// demoRelease is what `image release` builds: two bases of this tree, and
// the demo application through a required intermediate version (1.1.0
// needs base 1.1.0; 2.0.0 migrates from 1.1.0, so boxes go through both)
// to 2.0.1, which fails its health check, for rollback tests.
var demoRelease = []releasePackage{
	{Kind: kpkg.KindBase, Name: "keel", Version: "1.0.0", Notes: "The first keel base."},
	{Kind: kpkg.KindBase, Name: "keel", Version: "1.1.0", Notes: "A newer keel base; demo 1.1.0 and later need it."},
	{Kind: kpkg.KindApp, Name: "demo", Version: "1.0.0", Wait: 24 * time.Hour,
		Notes: "The first demo application.\nClients take up to 24 hours to follow an update: the next app package waits that long."},
	{Kind: kpkg.KindApp, Name: "demo", Version: "1.0.1",
		Notes: "A hot fix with nothing for clients to follow, so no wait after it."},
	{Kind: kpkg.KindApp, Name: "demo", Version: "1.1.0", Requires: []string{"base >= 1.1.0"}, Wait: 24 * time.Hour,
		Notes: "Needs base 1.1.0. Prepares the data for 2.0.0."},
	{Kind: kpkg.KindApp, Name: "demo", Version: "2.0.0", Requires: []string{"app >= 1.1.0"}, Wait: 24 * time.Hour,
		Notes: "Migrates the data that 1.1.0 prepared, so it installs only over 1.1.0 or later; later versions install over 2.0.0."},
	{Kind: kpkg.KindApp, Name: "demo", Version: "2.0.1", Requires: []string{"app >= 2.0.0"}, Wait: 24 * time.Hour,
		Notes: "Fails its health check on purpose: the appliance rolls it back to 2.0.0."},
}

// release is `image release`: it builds the demo release into a folder
// (packages/, a signed catalog, an empty appliances.json when there is
// none) that `image serve` serves.
func release(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("release", flag.ExitOnError)
	dir := fl.String("dir", "build/release", "release `folder` to write")
	keyPath := fl.String("key", "build/keys/vendor.key", "vendor signing key (PEM, from `image keygen`)")
	kernelDir := fl.String("kernel-dir", "build/kernel", "unpacked kernel from `make deps` (vmlinuz, version), for the bases")
	initramfs := fl.String("initramfs", "build/initramfs.cpio.lz4", "initramfs from `make initramfs`, for the bases")
	catVersion := fl.Uint64("catalog-version", 0, "the catalog's `version`; it must go up with every release (0: the build time in Unix seconds)")
	lifetime := fl.Duration("catalog-lifetime", catalog.DefaultLifetime, "how long the signed catalog stays fresh; boxes show it as stale after")
	var waits listFlag
	waits.split = true
	fl.Var(&waits, "wait", "`VERSION=DURATION` overrides an app version's wait, e.g. 1.1.0=0 or *=0 for every app version (repeatable)")
	fl.Parse(args)
	if fl.NArg() > 0 {
		return fmt.Errorf("release: unexpected arguments %q", fl.Args())
	}
	pkgs, err := applyWaits(demoRelease, waits.values)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	keyPEM, err := os.ReadFile(*keyPath)
	if err != nil {
		return fmt.Errorf("release: signing key: %w (make one with `go run ./image keygen`)", err)
	}
	key, err := kpkg.ParsePrivateKey(keyPEM)
	if err != nil {
		return fmt.Errorf("release: %s: %w", *keyPath, err)
	}
	pkgDir := filepath.Join(*dir, catalog.PackagesDir)
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	tmp, err := os.MkdirTemp(*dir, ".release-")
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	defer os.RemoveAll(tmp)

	for _, p := range pkgs {
		m, err := p.manifest()
		if err != nil {
			return fmt.Errorf("release: %w", err)
		}
		start := time.Now()
		payload := filepath.Join(tmp, fmt.Sprintf("%s-%s-%s.squashfs", p.Name, p.Kind, p.Version))
		if p.Kind == kpkg.KindBase {
			err = baseFromBuild(payload, *kernelDir, *initramfs, p.Name, p.Version)
		} else {
			err = appimage.Demo(payload, p.Version)
		}
		if err != nil {
			return fmt.Errorf("release: %s %s %s: %w", p.Kind, p.Name, p.Version, err)
		}
		out := filepath.Join(pkgDir, fmt.Sprintf("%s-%s-%s.kpkg", p.Name, p.Kind, p.Version))
		if err := writePackageFile(out, m, payload, key); err != nil {
			return fmt.Errorf("release: %w", err)
		}
		os.Remove(payload)
		fmt.Fprintf(stdout, "%-22s %s (%.1fs)\n", fmt.Sprintf("%s %s %s", p.Kind, p.Name, p.Version), out, time.Since(start).Seconds())
	}

	reg := filepath.Join(*dir, downloadkey.RegistryFile)
	if _, err := os.Stat(reg); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(reg, []byte("{}\n"), 0o644); err != nil {
			return fmt.Errorf("release: %w", err)
		}
		fmt.Fprintf(stdout, "%s is empty: register each appliance's identity key there for offline updates\n", reg)
	}
	c, err := catalog.BuildWith(*dir, key, catalog.BuildOptions{Generated: buildTime(), Version: *catVersion, Lifetime: *lifetime})
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	fmt.Fprintf(stdout, "catalog %s: version %d, %d packages, signed by %s, fresh until %s\nserve it with: go run ./image serve -dir %s\n",
		filepath.Join(*dir, catalog.JSONFile), c.Version, len(c.Entries), kpkg.KeyID(key.Public().(ed25519.PublicKey)), c.Expires.Format(time.RFC3339), *dir)
	return nil
}

// manifest is the package's manifest, before Write fills in the payload.
func (p releasePackage) manifest() (kpkg.Manifest, error) {
	v, err := kpkg.ParseVersion(p.Version)
	if err != nil {
		return kpkg.Manifest{}, err
	}
	m := kpkg.Manifest{Kind: p.Kind, Name: p.Name, Version: v, Wait: kpkg.Duration(p.Wait), Notes: p.Notes + "\n"}
	for _, s := range p.Requires {
		r, err := kpkg.ParseRequirement(s)
		if err != nil {
			return kpkg.Manifest{}, err
		}
		m.Requires = append(m.Requires, r)
	}
	return m, nil
}

// applyWaits returns pkgs with the app waits that overrides
// ("VERSION=DURATION", VERSION * for all) set.
func applyWaits(pkgs []releasePackage, overrides []string) ([]releasePackage, error) {
	out := append([]releasePackage(nil), pkgs...)
	for _, o := range overrides {
		version, dur, ok := strings.Cut(o, "=")
		d, err := time.ParseDuration(dur)
		if !ok || err != nil || d < 0 {
			return nil, fmt.Errorf("-wait %q is not VERSION=DURATION, such as 1.1.0=24h or *=0", o)
		}
		found := false
		for i := range out {
			if out[i].Kind == kpkg.KindApp && (version == "*" || out[i].Version == version) {
				out[i].Wait, found = d, true
			}
		}
		if !found {
			return nil, fmt.Errorf("-wait %q: the release has no app version %s", o, version)
		}
	}
	return out, nil
}
