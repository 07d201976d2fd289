package catalog

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/image/kpkg"
)

func testKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// writePackage writes a small signed package into dir/packages.
func writePackage(t *testing.T, dir string, m kpkg.Manifest, key ed25519.PrivateKey) []byte {
	t.Helper()
	var b bytes.Buffer
	payload := bytes.Repeat([]byte(m.Name+m.Version.String()), 300)
	if err := kpkg.Write(&b, m, bytes.NewReader(payload), key); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, PackagesDir), 0o755)
	name := filepath.Join(dir, PackagesDir, m.Name+"-"+string(m.Kind)+"-"+m.Version.String()+".kpkg")
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func demoRelease(t *testing.T, key ed25519.PrivateKey) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	files := map[string][]byte{}
	for _, e := range demo().Entries {
		m := kpkg.Manifest{Kind: e.Kind, Name: e.Name, Version: e.Version, Requires: e.Requires, Notes: "Notes for " + e.Version.String() + ".\n"}
		if e.Version.String() == "1.0.0" && e.Kind == kpkg.KindApp {
			m.Wait = kpkg.Duration(24 * time.Hour)
		}
		files[e.String()] = writePackage(t, dir, m, key)
	}
	return dir, files
}

func TestBuildAndVerify(t *testing.T) {
	key := testKey(1)
	dir, files := demoRelease(t, key)
	os.WriteFile(filepath.Join(dir, TargetsFile), []byte(`{"demo@2.0.1": {"channels": ["beta"], "serials": ["KX1-0002"]}}`), 0o644)
	os.WriteFile(filepath.Join(dir, PackagesDir, "README.txt"), []byte("not a package"), 0o644)
	generated := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	built, err := Build(dir, key, generated)
	if err != nil {
		t.Fatal(err)
	}

	cj, err := os.ReadFile(filepath.Join(dir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(filepath.Join(dir, SigFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Verify(cj, sig, []ed25519.PublicKey{pub(testKey(2)), pub(key)})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Entries) != 7 || len(built.Entries) != 7 || !c.Generated.Equal(generated) {
		t.Fatalf("%d entries (built %d), generated %v", len(c.Entries), len(built.Entries), c.Generated)
	}
	if c.Version != uint64(generated.Unix()) || !c.Expires.Equal(generated.Add(DefaultLifetime)) {
		t.Errorf("version %d, expires %v; want the build time's seconds and %v later", c.Version, c.Expires, DefaultLifetime)
	}
	if c.Expired(generated.Add(DefaultLifetime-time.Second)) || !c.Expired(generated.Add(DefaultLifetime)) {
		t.Errorf("Expired is wrong around %v", c.Expires)
	}
	var order []string
	for _, e := range c.Entries {
		order = append(order, e.String())
		data := files[e.String()]
		sum := sha256.Sum256(data)
		if e.Size != int64(len(data)) || e.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: size %d sha256 %s; the file has %d bytes", e, e.Size, e.SHA256, len(data))
		}
		if _, err := os.Stat(filepath.Join(dir, filepath.FromSlash(e.File))); err != nil {
			t.Errorf("%s: file %s: %v", e, e.File, err)
		}
		if e.Notes != "Notes for "+e.Version.String()+".\n" {
			t.Errorf("%s: notes %q", e, e.Notes)
		}
	}
	if got := strings.Join(order, ", "); got != "base keel 1.0.0, base keel 1.1.0, app demo 1.0.0, app demo 1.0.1, app demo 1.1.0, app demo 2.0.0, app demo 2.0.1" {
		t.Errorf("order: %s", got)
	}
	last := c.Entries[6]
	if strings.Join(last.Channels, ",") != "beta" || strings.Join(last.Serials, ",") != "KX1-0002" || len(c.Entries[5].Channels) != 0 {
		t.Errorf("targets: 2.0.1 %v %v, 2.0.0 %v", last.Channels, last.Serials, c.Entries[5].Channels)
	}
	if c.Entries[2].Wait != kpkg.Duration(24*time.Hour) || c.Entries[4].Requires[0].String() != "base >= 1.1.0" {
		t.Errorf("manifest fields: wait %v, requires %v", c.Entries[2].Wait, c.Entries[4].Requires)
	}
	if !bytes.Contains(cj, []byte(`"op": ">="`)) {
		t.Errorf("catalog.json escapes HTML or is not indented:\n%s", cj)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	// Building again from the same packages gives the same bytes.
	if _, err := Build(dir, key, generated); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, JSONFile)); !bytes.Equal(again, cj) {
		t.Error("a rebuild changed catalog.json")
	}
}

func TestBuildRefuses(t *testing.T) {
	key := testKey(1)
	generated := time.Now()

	if _, err := Build(t.TempDir(), key, generated); err == nil || !strings.Contains(err.Error(), "there are no packages in") {
		t.Errorf("empty release: %v", err)
	}

	dir, _ := demoRelease(t, key)
	writePackage(t, dir, kpkg.Manifest{Kind: kpkg.KindApp, Name: "demo", Version: v("3.0.0")}, testKey(9))
	_, err := Build(dir, key, generated)
	if !errors.Is(err, kpkg.ErrUnknownKey) || !strings.Contains(err.Error(), "demo-app-3.0.0.kpkg") || !strings.Contains(err.Error(), "sign it with the release's key "+kpkg.KeyID(pub(key))) {
		t.Errorf("a package signed by another key: %v", err)
	}

	dir, _ = demoRelease(t, key)
	os.WriteFile(filepath.Join(dir, TargetsFile), []byte(`{"dmeo@2.0.1": {"serials": ["KX1-0002"]}}`), 0o644)
	_, err = Build(dir, key, generated)
	if err == nil || !strings.Contains(err.Error(), "names dmeo@2.0.1, but no package in packages is dmeo@2.0.1") {
		t.Errorf("a misspelt target: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, JSONFile)); err == nil {
		t.Error("a refused build wrote catalog.json")
	}

	dir, _ = demoRelease(t, key)
	pkgs, _ := filepath.Glob(filepath.Join(dir, PackagesDir, "*.kpkg"))
	b, _ := os.ReadFile(pkgs[0])
	os.WriteFile(filepath.Join(dir, PackagesDir, "copy.kpkg"), b, 0o644)
	if _, err := Build(dir, key, generated); err == nil || !strings.Contains(err.Error(), "are both") {
		t.Errorf("the same package twice: %v", err)
	}

	dir, _ = demoRelease(t, key)
	os.WriteFile(filepath.Join(dir, PackagesDir, filepath.Base(pkgs[0])), b[:len(b)-2000], 0o644)
	if _, err := Build(dir, key, generated); !errors.Is(err, kpkg.ErrTruncated) {
		t.Errorf("a truncated package: %v", err)
	}
}

// signRaw signs arbitrary bytes as catalog.sig, to make catalogs Build
// would refuse to write.
func signRaw(b []byte, key ed25519.PrivateKey) []byte {
	s, _ := json.Marshal(signature{KeyID: kpkg.KeyID(pub(key)), Ed25519: ed25519.Sign(key, b)})
	return append(s, '\n')
}

func TestVerifyRefuses(t *testing.T) {
	key := testKey(1)
	trusted := []ed25519.PublicKey{pub(key)}
	cj, sig, err := Sign(demo(), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(cj, sig, trusted); err != nil {
		t.Fatalf("a good catalog: %v", err)
	}

	altered := bytes.Replace(cj, []byte(`"2.0.1"`), []byte(`"2.0.2"`), 1)
	_, err = Verify(altered, sig, trusted)
	if !errors.Is(err, kpkg.ErrSignature) || !strings.Contains(err.Error(), "changed after signing") {
		t.Errorf("altered catalog: %v", err)
	}

	_, err = Verify(cj, sig, []ed25519.PublicKey{pub(testKey(2))})
	if !errors.Is(err, kpkg.ErrUnknownKey) || !strings.Contains(err.Error(), "the catalog is signed by an unknown key "+kpkg.KeyID(pub(key))) {
		t.Errorf("unknown key: %v", err)
	}

	for _, bad := range [][]byte{nil, []byte("{}\n"), []byte(`{"key_id":"x","ed25519":"AAAA"}` + "\n"), bytes.TrimSuffix(sig, []byte("\n"))} {
		if _, err := Verify(cj, bad, trusted); err == nil || !strings.Contains(err.Error(), "catalog.sig") {
			t.Errorf("signature %q: %v", bad, err)
		}
	}

	for name, body := range map[string]string{
		"not JSON":      `{"format": 1, "entries": [`,
		"unknown field": `{"format": 1, "generated": "2026-11-27T10:00:00Z", "entries": [], "mirror": "x"}`,
		"bad version":   `{"format": 1, "generated": "2026-11-27T10:00:00Z", "entries": [{"kind": "app", "name": "demo", "version": "1.0", "file": "packages/a.kpkg", "size": 1, "sha256": "` + strings.Repeat("0", 64) + `"}]}`,
		"path escape":   `{"format": 1, "generated": "2026-11-27T10:00:00Z", "entries": [{"kind": "app", "name": "demo", "version": "1.0.0", "file": "../etc/a.kpkg", "size": 1, "sha256": "` + strings.Repeat("0", 64) + `"}]}`,
	} {
		_, err := Verify([]byte(body), signRaw([]byte(body), key), trusted)
		if err == nil || !strings.HasPrefix(err.Error(), "the catalog is signed but invalid: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, body := range map[string]string{
		"no version":          `{"format": 1, "generated": "2026-11-27T10:00:00Z", "expires": "2026-12-27T10:00:00Z", "entries": []}`,
		"expires before made": `{"format": 1, "version": 3, "generated": "2026-11-27T10:00:00Z", "expires": "2026-11-26T10:00:00Z", "entries": []}`,
		"no expiry":           `{"format": 1, "version": 3, "generated": "2026-11-27T10:00:00Z", "entries": []}`,
	} {
		_, err := Verify([]byte(body), signRaw([]byte(body), key), trusted)
		if err == nil || !strings.HasPrefix(err.Error(), "the catalog is signed but invalid: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	newer := `{"format": 2, "entries": []}`
	if _, err := Verify([]byte(newer), signRaw([]byte(newer), key), trusted); err == nil || !strings.Contains(err.Error(), "format 2 is newer than this reader understands (1): update the base first") {
		t.Errorf("newer format: %v", err)
	}
}
