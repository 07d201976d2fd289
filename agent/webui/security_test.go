package webui

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"html"
	"math/big"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/access"
	"keel.dev/keel/agent/peerkey"
)

var csrRE = regexp.MustCompile(`(?s)<textarea id="csr-text"[^>]*>(.*?)</textarea>`)

// signCSR signs a CSR in PEM with a new CA, returning the leaf and the
// CA's certificate in PEM.
func signCSR(t *testing.T, csrPEM string, now time.Time) (leaf, caPEM string, ca *x509.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"}, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	ca, _ = x509.ParseCertificate(der)
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil {
		t.Fatalf("no CSR in %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: csr.Subject, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err = x509.CreateCertificate(rand.Reader, lt, ca, csr.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})), ca
}

func TestSecurityPageCSRImportAssignExport(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	a := br.form(Prefix+"/security", url.Values{"do": {"csr"}, "cn": {"box.example.net"}, "sans": {"box.example.net 127.0.0.1"}, "key": {"ecdsa-p256"}})
	m := csrRE.FindStringSubmatch(a.body)
	if a.code != http.StatusOK || m == nil || !strings.Contains(a.body, "waits for its certificate") {
		t.Fatalf("CSR: %d %s", a.code, a.body)
	}
	leaf, caPEM, ca := signCSR(t, html.UnescapeString(m[1]), b.clock.Now())
	a = br.form(Prefix+"/security", url.Values{"do": {"import"}, "cert_pem": {leaf + caPEM}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "the certificate was imported") || !strings.Contains(a.body, "Issuer: CN=Test CA") {
		t.Fatalf("import: %d %s", a.code, a.body)
	}
	list := b.certs.List()
	id := list[len(list)-1].ID
	a = br.form(Prefix+"/security", url.Values{"do": {"assign"}, "default": {"appliance"}, "addr0": {"127.0.0.1"}, "addr0_cert": {id}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "served on 127.0.0.1") {
		t.Fatalf("assign: %d %s", a.code, a.body)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(b.srv.URL, "https://"), &tls.Config{RootCAs: pool, ServerName: "box.example.net", Time: b.clock.Now})
	if err != nil {
		t.Fatalf("the box does not serve the imported certificate on 127.0.0.1: %v", err)
	}
	conn.Close()
	a = br.form(Prefix+"/security/export", url.Values{"id": {id}, "format": {"pkcs12"}, "passphrase": {"short"}})
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "at least 8 characters") {
		t.Fatalf("export with a short passphrase: %d", a.code)
	}
	a = br.form(Prefix+"/security/export", url.Values{"id": {id}, "format": {"pkcs12"}, "passphrase": {"export-pass-1"}})
	if a.code != http.StatusOK || a.header.Get("Content-Type") != "application/x-pkcs12" {
		t.Fatalf("export: %d %s", a.code, a.header)
	}
	if _, err := exec.LookPath("openssl"); err == nil {
		f := filepath.Join(t.TempDir(), "e.p12")
		os.WriteFile(f, []byte(a.body), 0o600)
		out, err := exec.Command("openssl", "pkcs12", "-in", f, "-passin", "pass:export-pass-1", "-nokeys").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "CN = box.example.net") || !strings.Contains(string(out), "CN = Test CA") {
			t.Fatalf("openssl pkcs12: %v\n%s", err, out)
		}
	}
	a = br.form(Prefix+"/security", url.Values{"do": {"delete"}, "id": {id}})
	if a.code != http.StatusConflict || !strings.Contains(a.body, "in use") {
		t.Fatalf("deleting an assigned certificate: %d", a.code)
	}
	a = br.form(Prefix+"/security", url.Values{"do": {"tls"}, "min_version": {"1.3"}})
	if a.code != http.StatusOK {
		t.Fatalf("TLS 1.3: %d %s", a.code, a.body)
	}
	if c, err := tls.Dial("tcp", strings.TrimPrefix(b.srv.URL, "https://"), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		c.Close()
		t.Fatal("TLS 1.2 still connects")
	}
}

var newKeyRE = regexp.MustCompile(`id="new-peer-key" class="mono" value="([^"]+)"`)

func TestAllowedNetworksAndThePeerKey(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	a := br.form(Prefix+"/security", url.Values{"do": {"access"}, "default_action": {"reject"}, "accept": {"10.0.0.0/8"}})
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "would shut out your own address 127.0.0.1") {
		t.Fatalf("rules that shut out the browser: %d", a.code)
	}
	a = br.form(Prefix+"/security", url.Values{"do": {"access"}, "default_action": {"reject"}, "accept": {"127.0.0.0/8 10.0.0.0/8"}, "reject": {"127.0.0.2"}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "the allowed networks were saved") {
		t.Fatalf("rules: %d %s", a.code, a.body)
	}
	if !b.access.Allowed(netip.MustParseAddr("127.0.0.1")) || b.access.Allowed(netip.MustParseAddr("127.0.0.2")) || b.access.Allowed(netip.MustParseAddr("192.0.2.1")) {
		t.Fatal("the rules saved are not the rules asked for")
	}
	// A client outside them is refused before anything else, the login
	// page too.
	b.access.Set(access.Rules{Default: access.Reject, Accept: []string{"192.0.2.0/24"}}, netip.Addr{})
	if a := br.do("GET", Prefix+"/login", nil); a.code != http.StatusForbidden || !strings.Contains(a.body, "not among the networks allowed") {
		t.Fatalf("a refused address: %d %s", a.code, a.body)
	}
	b.access.Reset()

	a = br.form(Prefix+"/security", url.Values{"do": {"peer-generate"}})
	m := newKeyRE.FindStringSubmatch(a.body)
	if a.code != http.StatusOK || m == nil || m[1] != b.peer.Key() {
		t.Fatalf("generate: %d", a.code)
	}
	if a := br.do("GET", Prefix+"/security", nil); strings.Contains(a.body, m[1]) || !strings.Contains(a.body, peerkey.Fingerprint(m[1])) {
		t.Fatal("the key shows again after it was generated, or its fingerprint does not")
	}
	a = br.form(Prefix+"/security", url.Values{"do": {"peer-set"}, "peer_key": {"short"}})
	if a.code != http.StatusBadRequest {
		t.Fatalf("a short key: %d", a.code)
	}
}
