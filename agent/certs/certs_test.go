package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/identity"
)

var now = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// testCA is a root and an intermediate that sign CSRs, as a company CA
// would.
type testCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{}
	ca.rootKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca.interKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Root CA"}, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, rt, rt, ca.rootKey.Public(), ca.rootKey)
	ca.root, _ = x509.ParseCertificate(der)
	it := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Test Issuing CA"}, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ = x509.CreateCertificate(rand.Reader, it, ca.root, ca.interKey.Public(), ca.rootKey)
	ca.inter, _ = x509.ParseCertificate(der)
	return ca
}

// sign signs a CSR in PEM for days, returning the leaf in PEM.
func (ca *testCA) sign(t *testing.T, csrPEM string, days int) string {
	t.Helper()
	b, _ := pem.Decode([]byte(csrPEM))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("the CSR: %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: csr.Subject, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses,
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, days), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, csr.PublicKey, ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

func builtin(t *testing.T) tls.Certificate {
	t.Helper()
	id, err := identity.LoadOrCreate(t.TempDir(), "KEEL-TEST-1", []string{"localhost"}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	return id.TLS
}

func open(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "certs.json")
	s, err := Open(path, builtin(t), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	s.Hostname = func() string { return "box.example.net" }
	return s, path
}

func warned(i Info, part string) bool {
	for _, w := range i.Warnings {
		if strings.Contains(w, part) {
			return true
		}
	}
	return false
}

func TestCSRSignedByACAIsImportedAssignedAndServed(t *testing.T) {
	s, path := open(t)
	ca := newCA(t)
	info, csr, err := s.CSR(Request{CN: "box.example.net", SANs: []string{"box.example.net", "127.0.0.1"}, Key: RSA2048})
	if err != nil {
		t.Fatal(err)
	}
	if !info.PendingCSR || info.Key != "RSA 2048" || !warned(info, "waits for its certificate") {
		t.Fatalf("the CSR's entry: %+v", info)
	}
	if got, _ := s.CSRText(info.ID); got != csr {
		t.Fatal("the CSR cannot be read back")
	}
	if err := s.Assign(Assignments{Default: info.ID}); err == nil {
		t.Fatal("a CSR waiting for its certificate became the default")
	}
	leaf := ca.sign(t, csr, 200)
	// The chain pasted out of order, root first, as people do.
	done, err := s.Import(Import{CertPEM: pemOf(ca.root) + leaf + pemOf(ca.inter)})
	if err != nil {
		t.Fatal(err)
	}
	if done.ID != info.ID || done.PendingCSR || done.Chain != 2 || done.SelfSigned || done.Issuer != "CN=Test Issuing CA" || len(done.Warnings) != 0 {
		t.Fatalf("the imported certificate: %+v", done)
	}
	if err := s.Assign(Assignments{Default: Builtin, ByAddress: map[string]string{"127.0.0.1": info.ID}}); err != nil {
		t.Fatal(err)
	}
	// It survives a restart.
	s2, err := Open(path, s.builtin, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetConfigForClient: s2.ConfigForClient})
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
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	roots := x509.NewCertPool()
	roots.AddCert(ca.root)
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "box.example.net", Time: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("a client trusting the CA: %v", err)
	}
	served := conn.ConnectionState().PeerCertificates
	conn.Close()
	if len(served) != 3 || served[0].Subject.CommonName != "box.example.net" || served[1].Subject.CommonName != "Test Issuing CA" {
		t.Fatalf("served %d certificates", len(served))
	}
	// Unassigned, the default (the appliance's own) answers again.
	s2.Assign(Assignments{Default: Builtin})
	conn, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "KEEL-TEST-1" {
		t.Fatalf("default served %q", cn)
	}
	conn.Close()
	// But a client asking for box.example.net by name gets it (SNI).
	conn, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "box.example.net", Time: func() time.Time { return now }})
	if err != nil {
		t.Fatalf("by SNI: %v", err)
	}
	conn.Close()
}

func TestImportRefusesAForeignKeyAndWarns(t *testing.T) {
	s, _ := open(t)
	ca := newCA(t)
	_, csr, _ := s.CSR(Request{CN: "other.example.net"})
	leaf := ca.sign(t, csr, 10)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kp, _ := keyPEM(otherKey)
	var fe api.FieldError
	if _, err := s.Import(Import{CertPEM: leaf, KeyPEM: kp}); !errors.As(err, &fe) || fe.Field != "key_pem" {
		t.Fatalf("a certificate with another key: %v", err)
	}
	if _, err := s.Import(Import{CertPEM: pemOf(ca.inter)}); !errors.As(err, &fe) || !strings.Contains(fe.Problem, "no key") {
		t.Fatalf("a certificate without its key: %v", err)
	}
	info, err := s.Import(Import{CertPEM: leaf})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"expires in 10 days", "does not name the host name box.example.net", "no chain"} {
		if !warned(info, want) {
			t.Errorf("no warning %q: %v", want, info.Warnings)
		}
	}
	self, err := s.SelfSigned(Request{CN: "box.example.net", Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !self.SelfSigned || !warned(self, "self-signed") || warned(self, "host name") {
		t.Fatalf("self-signed: %+v", self)
	}
	s.now = func() time.Time { return now.AddDate(0, 0, 2) }
	if i, _ := s.Info(self.ID); !warned(i, "expired") {
		t.Fatalf("no expiry warning: %v", i.Warnings)
	}
	if err := s.Delete(Builtin); !errors.Is(err, ErrBuiltin) {
		t.Fatalf("deleting the appliance's own: %v", err)
	}
	s.Assign(Assignments{Default: self.ID})
	if err := s.Delete(self.ID); !errors.Is(err, ErrInUse) {
		t.Fatalf("deleting the default: %v", err)
	}
}

func TestPKCS12RoundTripOpensWithOpenSSL(t *testing.T) {
	s, _ := open(t)
	info, err := s.SelfSigned(Request{CN: "box.example.net", Key: ECDSAP256})
	if err != nil {
		t.Fatal(err)
	}
	var fe api.FieldError
	if _, _, _, err := s.Export(info.ID, Export{Format: FormatPKCS12, Passphrase: "short"}); !errors.As(err, &fe) {
		t.Fatalf("a short passphrase: %v", err)
	}
	p12, ct, _, err := s.Export(info.ID, Export{Format: FormatPKCS12, Passphrase: "correct horse"})
	if err != nil || ct != "application/x-pkcs12" {
		t.Fatal(err)
	}
	if _, err := s.Import(Import{PKCS12: p12, Passphrase: "wrong horse"}); !errors.As(err, &fe) || fe.Field != "passphrase" {
		t.Fatalf("a wrong passphrase: %v", err)
	}
	again, err := s.Import(Import{PKCS12: p12, Passphrase: "correct horse", Name: "copy"})
	if err != nil || again.Fingerprint != info.Fingerprint || again.Name != "copy" {
		t.Fatalf("reimport: %v %+v", err, again)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed (image/deps.sh installs it)")
	}
	f := filepath.Join(t.TempDir(), "c.p12")
	os.WriteFile(f, p12, 0o600)
	out, err := exec.Command("openssl", "pkcs12", "-in", f, "-passin", "pass:correct horse", "-nodes").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "BEGIN CERTIFICATE") || !strings.Contains(string(out), "PRIVATE KEY") {
		t.Fatalf("openssl pkcs12: %v\n%s", err, out)
	}
	pemOut, _, _, _ := s.Export(info.ID, Export{Format: FormatPEM})
	if strings.Contains(string(pemOut), "PRIVATE KEY") {
		t.Fatal("a PEM export without include_key holds the key")
	}
}

func TestTLSSettingsApplyToNewConnections(t *testing.T) {
	s, _ := open(t)
	if err := s.SetTLS(TLSSettings{MinVersion: "1.1"}); err == nil {
		t.Fatal("TLS 1.1 accepted")
	}
	if err := s.SetTLS(TLSSettings{MinVersion: "1.2", CipherSuites: []string{"TLS_RSA_WITH_AES_128_CBC_SHA"}}); err == nil {
		t.Fatal("a suite without forward secrecy accepted")
	}
	if err := s.SetTLS(TLSSettings{MinVersion: "1.3"}); err != nil {
		t.Fatal(err)
	}
	ln, _ := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetConfigForClient: s.ConfigForClient})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 client connected with the minimum at 1.3")
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
