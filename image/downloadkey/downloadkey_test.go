package downloadkey

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
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

var issued = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func body() Body {
	return Body{
		Serial: "KX1-0001", Hardware: "keel-vm", Channel: "stable",
		Installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0"), kpkg.KindApp: kpkg.MustParseVersion("1.0.0")},
		Names:     map[kpkg.Kind]string{kpkg.KindBase: "keel", kpkg.KindApp: "demo"},
		Issued:    issued, Expires: issued.Add(DefaultLifetime),
	}
}

func issue(t *testing.T, b Body, key ed25519.PrivateKey) []byte {
	t.Helper()
	text, err := Issue(b, key)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func TestIssueParseVerify(t *testing.T) {
	id := testKey(1)
	text := issue(t, body(), id)
	lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	if lines[0] != "-----BEGIN KEEL DOWNLOAD KEY-----" || lines[len(lines)-1] != "-----END KEEL DOWNLOAD KEY-----" {
		t.Errorf("armour:\n%s", text)
	}
	for _, l := range lines {
		if len(l) > 64 {
			t.Errorf("line of %d characters: %s", len(l), l)
		}
	}

	// Pasted into a mail: indented, CRLF, text around it.
	pasted := "Here is the key:\r\n\r\n" + strings.ReplaceAll("  "+string(text), "\n", "\r\n  ") + "\r\nThanks.\r\n"
	k, err := Parse([]byte(pasted))
	if err != nil {
		t.Fatal(err)
	}
	if k.Serial != "KX1-0001" || k.Channel != "stable" || k.Hardware != "keel-vm" || k.Installed[kpkg.KindApp].String() != "1.0.0" ||
		k.Names[kpkg.KindApp] != "demo" || k.KeyID != kpkg.KeyID(pub(id)) || !k.Expires.Equal(issued.Add(30*time.Minute)) {
		t.Errorf("parsed %+v", k.Body)
	}
	if err := k.Verify(pub(id), issued.Add(29*time.Minute)); err != nil {
		t.Errorf("a valid key: %v", err)
	}
	// A little clock difference is allowed.
	if err := k.Verify(pub(id), issued.Add(-MaxSkew)); err != nil {
		t.Errorf("issued within the skew: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	id := testKey(1)
	k, err := Parse(issue(t, body(), id))
	if err != nil {
		t.Fatal(err)
	}

	err = k.Verify(pub(id), issued.Add(DefaultLifetime))
	if !errors.Is(err, ErrExpired) || err.Error() != "the download key expired at 2026-11-27 10:30 UTC; ask the appliance for a new one" {
		t.Errorf("expired: %v", err)
	}

	err = k.Verify(pub(id), issued.Add(-time.Hour))
	if !errors.Is(err, ErrClock) || !strings.Contains(err.Error(), "issued at 2026-11-27 10:00 UTC, which is in the future") ||
		!strings.Contains(err.Error(), "the appliance's clock is ahead") {
		t.Errorf("issued in the future: %v", err)
	}

	err = k.Verify(pub(testKey(2)), issued)
	if !errors.Is(err, ErrForged) || !strings.Contains(err.Error(), "register the appliance's current identity key") {
		t.Errorf("another appliance's key: %v", err)
	}

	// Altered: the body says app 2.0.1 but the signature is the original's.
	altered := *k
	altered.Installed = map[kpkg.Kind]kpkg.Version{kpkg.KindApp: kpkg.MustParseVersion("2.0.1")}
	altered.BodyJSON, _ = json.Marshal(altered.Body)
	if err := altered.Verify(pub(id), issued); !errors.Is(err, ErrForged) || !strings.Contains(err.Error(), "altered or forged") {
		t.Errorf("altered: %v", err)
	}
	// The same through the text: one character of the body changed.
	text := issue(t, body(), id)
	i := bytes.IndexByte(text, '\n') + 10
	text[i] ^= 'A' ^ 'B'
	if k, err := Parse(text); err == nil {
		if err := k.Verify(pub(id), issued); !errors.Is(err, ErrForged) {
			t.Errorf("a changed character: %v", err)
		}
	}

	// A lifetime over the maximum, signed by the right key.
	long := body()
	long.Format, long.KeyID, long.Expires = FormatVersion, kpkg.KeyID(pub(id)), issued.Add(MaxLifetime+time.Minute)
	lk := signed(t, long, id)
	if err := lk.Verify(pub(id), issued); !errors.Is(err, ErrClock) || !strings.Contains(err.Error(), "longer than the 24h0m0s allowed") {
		t.Errorf("a long lifetime: %v", err)
	}
	if _, err := Issue(long, id); err == nil {
		t.Error("Issue signed a lifetime over the maximum")
	}
}

// signed makes a key by hand, for bodies Issue refuses to sign.
func signed(t *testing.T, b Body, key ed25519.PrivateKey) *Key {
	t.Helper()
	bj, _ := json.Marshal(b)
	text := beginLine + "\n" + base64.StdEncoding.EncodeToString(bj) + "\n" + sigLine + "\n" +
		base64.StdEncoding.EncodeToString(ed25519.Sign(key, bj)) + "\n" + endLine + "\n"
	k, err := Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestParseRefuses(t *testing.T) {
	text := string(issue(t, body(), testKey(1)))
	for name, c := range map[string]struct{ text, want string }{
		"empty":       {"", "this is not a download key: it has no line \"-----BEGIN KEEL DOWNLOAD KEY-----\""},
		"package":     {"manifest.json\x00\x00", "this is not a download key"},
		"cut short":   {text[:len(text)/2], "the download key is cut short"},
		"two keys":    {text + text, "is out of place; paste exactly one key"},
		"not base64":  {strings.Replace(text, "\n", "\n*", 1), "its body is not base64"},
		"short sig":   {strings.Replace(text, "-----SIGNATURE-----\n", "-----SIGNATURE-----\nAAAA\n", 1), "its signature is not 64 bytes"},
		"wrong label": {strings.ReplaceAll(text, "KEEL DOWNLOAD KEY", "PUBLIC KEY"), "this is not a download key"},
	} {
		_, err := Parse([]byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant %q", name, err, c.want)
		}
	}
	if _, err := Issue(Body{Issued: issued, Expires: issued.Add(time.Minute)}, testKey(1)); err == nil || !strings.Contains(err.Error(), "serial") {
		t.Errorf("no serial: %v", err)
	}
}

func TestRegistry(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, RegistryFile)
	if _, err := LoadRegistry(path); err == nil || !strings.Contains(err.Error(), "does not exist; create it") {
		t.Errorf("missing registry: %v", err)
	}
	a, _ := EncodePublicKey(pub(testKey(1)))
	pemB, _ := kpkg.MarshalPublicKey(pub(testKey(2)))
	reg, _ := json.Marshal(map[string]string{"KX1-0001": a, "KX1-0002": string(pemB)})
	os.WriteFile(path, reg, 0o644)
	r, err := LoadRegistry(path)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := r.Lookup("KX1-0001"); err != nil || !k.Equal(pub(testKey(1))) {
		t.Errorf("base64 key: %v", err)
	}
	if k, err := r.Lookup("KX1-0002"); err != nil || !k.Equal(pub(testKey(2))) {
		t.Errorf("PEM key: %v", err)
	}
	_, err = r.Lookup("KX1-0009")
	if err == nil || err.Error() != `appliance "KX1-0009" is not registered: add its serial and identity public key to appliances.json in the release folder` {
		t.Errorf("unknown serial: %v", err)
	}

	for _, bad := range []string{`[]`, `{"KX1-0001": "not a key"}`, `{"KX1-0001": "` + base64.StdEncoding.EncodeToString([]byte("short")) + `"}`} {
		if _, err := ParseRegistry([]byte(bad)); err == nil {
			t.Errorf("registry %s was accepted", bad)
		}
	}
}
