package updates

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func pemOf(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func selfSigned(t *testing.T, isCA bool) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "other"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pemOf(der)
}

// With the vendor's CA pinned, an https update server is checked against
// it alone: its own CA passes, another CA and the public roots do not,
// and a CA setting that is no CA is refused with a sentence.
func TestPinnedVendorCA(t *testing.T) {
	_, _, srv, m := served(t, httptest.NewTLSServer)
	ctx := context.Background()
	if err := m.Check(ctx); !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a server the public roots do not know: %v", err)
	}
	if err := m.SetConfig(Config{Server: srv.URL, CA: selfSigned(t, true)}); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx); !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a server the pinned CA did not issue: %v", err)
	}
	if err := m.SetConfig(Config{Server: srv.URL, CA: pemOf(srv.Certificate().Raw)}); err != nil {
		t.Fatal(err)
	}
	if err := m.Check(ctx); err != nil {
		t.Errorf("the server of the pinned CA: %v", err)
	}
	for name, ca := range map[string]string{"not PEM": "hello", "not a CA": selfSigned(t, false)} {
		if err := m.SetConfig(Config{Server: srv.URL, CA: ca}); err == nil || !strings.HasPrefix(err.Error(), "ca: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if c := m.Config(); c.CA != pemOf(srv.Certificate().Raw) {
		t.Error("a refused CA setting changed the settings")
	}
}
