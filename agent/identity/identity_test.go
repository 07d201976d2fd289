package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fixedNow(t time.Time) func() time.Time { return func() time.Time { return t } }

var testNow = fixedNow(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))

func TestCreateThenLoadUnchanged(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreate(dir, "KEEL-0001", []string{"box.example", "192.0.2.7"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CertFile, KeyFile, SignFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", name, fi.Mode().Perm())
		}
	}
	// Different hosts and clock: the stored identity must come back as is.
	second, err := LoadOrCreate(dir, "KEEL-0001", []string{"other.example"}, fixedNow(time.Unix(0, 0)))
	if err != nil {
		t.Fatal(err)
	}
	if first.Fingerprint() != second.Fingerprint() {
		t.Errorf("fingerprint changed: %s -> %s", first.Fingerprint(), second.Fingerprint())
	}
	if !first.Key.Equal(second.Key) {
		t.Error("identity key changed")
	}
	msg := []byte("download key")
	if !ed25519.Verify(second.Key.Public().(ed25519.PublicKey), msg, ed25519.Sign(first.Key, msg)) {
		t.Error("identity key does not verify its own signature")
	}
}

func TestCertificateContents(t *testing.T) {
	id, err := LoadOrCreate(t.TempDir(), "KEEL-0002", []string{"box.example", "192.0.2.7", "localhost"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	c := id.TLS.Leaf
	if c == nil {
		t.Fatal("Leaf not set")
	}
	if c.Subject.CommonName != "KEEL-0002" {
		t.Errorf("CN = %q", c.Subject.CommonName)
	}
	if got := strings.Join(c.DNSNames, ","); got != "box.example,localhost" {
		t.Errorf("DNS SANs = %s", got)
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if got := strings.Join(ips, ","); got != "192.0.2.7,127.0.0.1,::1" {
		t.Errorf("IP SANs = %s", got)
	}
	if !c.NotBefore.Equal(notBefore) {
		t.Errorf("NotBefore = %v", c.NotBefore)
	}
	if want := time.Date(2046, 3, 1, 12, 0, 0, 0, time.UTC); !c.NotAfter.Equal(want) {
		t.Errorf("NotAfter = %v, want %v", c.NotAfter, want)
	}
	fp := id.Fingerprint()
	if len(fp) != 32*3-1 || strings.Count(fp, ":") != 31 {
		t.Errorf("fingerprint %q is not colon-separated SHA-256", fp)
	}
}

func TestNotAfterWithWrongClock(t *testing.T) {
	for _, tc := range []struct {
		now, want time.Time
	}{
		{time.Unix(0, 0), latestNotAfter},
		{time.Date(2090, 1, 1, 0, 0, 0, 0, time.UTC), latestNotAfter},
		{time.Date(2030, 5, 6, 0, 0, 0, 0, time.UTC), time.Date(2050, 5, 6, 0, 0, 0, 0, time.UTC)},
	} {
		if got := notAfter(tc.now); !got.Equal(tc.want) {
			t.Errorf("notAfter(%v) = %v, want %v", tc.now, got, tc.want)
		}
	}
}

func TestCorruptFilesAreNotReplaced(t *testing.T) {
	for _, name := range []string{CertFile, KeyFile, SignFile} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := LoadOrCreate(dir, "KEEL-0003", nil, testNow); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			garbage := []byte("not a pem file\n")
			if err := os.WriteFile(path, garbage, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadOrCreate(dir, "KEEL-0003", nil, testNow)
			if err == nil {
				t.Fatal("corrupt file accepted")
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "delete") {
				t.Errorf("error does not name the file and the way out: %v", err)
			}
			if got, _ := os.ReadFile(path); string(got) != string(garbage) {
				t.Error("corrupt file was overwritten")
			}
		})
	}
}

func TestMismatchedKeyIsAnError(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if _, err := LoadOrCreate(d, "KEEL-0004", nil, testNow); err != nil {
			t.Fatal(err)
		}
	}
	other, _ := os.ReadFile(filepath.Join(b, KeyFile))
	if err := os.WriteFile(filepath.Join(a, KeyFile), other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(a, "KEEL-0004", nil, testNow); err == nil {
		t.Fatal("certificate with someone else's key accepted")
	}
}

func TestCertWithoutKeyIsAnError(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, "KEEL-0005", nil, testNow); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, KeyFile))
	_, err := LoadOrCreate(dir, "KEEL-0005", nil, testNow)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want one about the missing key", err)
	}
}

// A power cut after the key was written but before the certificate was: the
// next boot finishes the job with the same key.
func TestKeyWithoutCertIsCompleted(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrCreate(dir, "KEEL-0006", nil, testNow)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, CertFile))
	second, err := LoadOrCreate(dir, "KEEL-0006", nil, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !second.TLS.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(first.TLS.Leaf.PublicKey) {
		t.Error("certificate key changed")
	}
}

func TestEmptySerial(t *testing.T) {
	if _, err := LoadOrCreate(t.TempDir(), "", nil, testNow); err == nil {
		t.Fatal("empty serial accepted")
	}
}

func TestHandshake(t *testing.T) {
	id, err := LoadOrCreate(t.TempDir(), "KEEL-0007", nil, testNow)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{id.TLS}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(id.TLS.Leaf)
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		t.Run(name, func(t *testing.T) {
			c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS12})
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "hi" {
				t.Fatalf("read %q, %v", got, err)
			}
			if fp := Fingerprint(c.ConnectionState().PeerCertificates[0].Raw); fp != id.Fingerprint() {
				t.Errorf("peer fingerprint %s, want %s", fp, id.Fingerprint())
			}
		})
	}
}

// The pin the console and the status give is the one curl takes: with
// it the box is reached without -k, and a wrong pin is refused.
func TestPublicKeyPinWorksWithCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is needed for this test (image/deps.sh installs it): %v", err)
	}
	id, err := LoadOrCreate(t.TempDir(), "KX-PIN", []string{"keel"}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{id.TLS}}
	ts.StartTLS()
	defer ts.Close()
	// --insecure only lifts the CA check; the pin is still enforced.
	out, err := exec.Command("curl", "-sS", "--insecure", "--pinnedpubkey", "sha256//"+id.PublicKeyPin(), ts.URL).CombinedOutput()
	if err != nil || string(out) != "ok" {
		t.Errorf("curl with the pin: %v %s", err, out)
	}
	wrong := strings.Repeat("A", 43) + "="
	if out, err := exec.Command("curl", "-sS", "--insecure", "--pinnedpubkey", "sha256//"+wrong, ts.URL).CombinedOutput(); err == nil {
		t.Errorf("curl with a wrong pin got through: %s", out)
	}
}
