package downloadkey

import (
	"crypto/ed25519"
	"testing"
	"time"

	"keel.dev/keel/image/kpkg"
)

// FuzzParse feeds the download key parser what an operator could paste:
// it never panics, and no key verifies with a public key that did not
// sign it.
func FuzzParse(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	key, err := Issue(Body{Serial: "KX1-0001", Hardware: "keel-vm", Installed: map[kpkg.Kind]kpkg.Version{kpkg.KindBase: kpkg.MustParseVersion("1.0.0")},
		Issued: now, Expires: now.Add(30 * time.Minute)}, priv)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(key)
	f.Add(key[:len(key)/2])
	f.Add([]byte("-----BEGIN KEEL DOWNLOAD KEY-----\n-----END KEEL DOWNLOAD KEY-----\n"))
	other, _, _ := ed25519.GenerateKey(nil)
	f.Fuzz(func(t *testing.T, text []byte) {
		k, err := Parse(text)
		if err != nil {
			return
		}
		if k.Verify(other, now) == nil {
			t.Fatal("a key verified with a public key that never signed it")
		}
	})
}
