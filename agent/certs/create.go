package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
)

// KeyKind is the key a new certificate or CSR gets.
type KeyKind string

// The keys offered: ECDSA P-256 (the default: small and fast), and RSA for
// CAs and clients that take nothing else.
const (
	ECDSAP256 KeyKind = "ecdsa-p256"
	RSA2048   KeyKind = "rsa-2048"
	RSA3072   KeyKind = "rsa-3072"
)

func newKey(k KeyKind) (crypto.Signer, error) {
	switch k {
	case ECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, api.FieldError{Field: "key", Problem: fmt.Sprintf("%q is not offered; use %s, %s or %s", k, ECDSAP256, RSA2048, RSA3072)}
}

// Request is what a new self-signed certificate or CSR names.
type Request struct {
	Name string   `json:"name"` // shown in the list; defaults to the common name
	CN   string   `json:"cn"`
	SANs []string `json:"sans"` // DNS names and IP addresses
	Key  KeyKind  `json:"key"`  // ecdsa-p256 (default), rsa-2048, rsa-3072
	Days int      `json:"days,omitempty"`
}

func (r *Request) check() ([]string, []net.IP, error) {
	r.CN = strings.TrimSpace(r.CN)
	if r.CN == "" || len(r.CN) > 64 {
		return nil, nil, api.FieldError{Field: "cn", Problem: "give a common name of 1 to 64 characters, usually the appliance's host name"}
	}
	if r.Name = strings.TrimSpace(r.Name); r.Name == "" {
		r.Name = r.CN
	}
	if len(r.Name) > 100 {
		return nil, nil, api.FieldError{Field: "name", Problem: "use at most 100 characters"}
	}
	var dns []string
	var ips []net.IP
	for _, s := range r.SANs {
		s = strings.TrimSpace(s)
		switch {
		case s == "":
		case net.ParseIP(s) != nil:
			ips = append(ips, net.ParseIP(s))
		case validDNSName(s):
			dns = append(dns, s)
		default:
			return nil, nil, api.FieldError{Field: "sans", Problem: fmt.Sprintf("%q is neither a DNS name nor an IP address", s)}
		}
	}
	if len(dns) == 0 && len(ips) == 0 {
		// Browsers ignore the common name: the SANs must name the box.
		if net.ParseIP(r.CN) != nil {
			ips = append(ips, net.ParseIP(r.CN))
		} else if validDNSName(r.CN) {
			dns = append(dns, r.CN)
		}
	}
	if r.Days == 0 {
		r.Days = 397 // the longest browsers accept from a public CA
	}
	if r.Days < 1 || r.Days > 3650 {
		return nil, nil, api.FieldError{Field: "days", Problem: "use 1 to 3650 days"}
	}
	return dns, ips, nil
}

func validDNSName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for i, label := range strings.Split(s, ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// SelfSigned makes a certificate signed by its own new key.
func (s *Store) SelfSigned(req Request) (Info, error) {
	dns, ips, err := req.check()
	if err != nil {
		return Info{}, err
	}
	key, err := newKey(req.Key)
	if err != nil {
		return Info{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return Info{}, err
	}
	now := s.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.CN},
		DNSNames:     dns, IPAddresses: ips,
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.AddDate(0, 0, req.Days),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return Info{}, fmt.Errorf("certs: sign: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return Info{}, err
	}
	e := entry{ID: newID(), Name: req.Name, Created: now.UTC(), KeyPEM: kp,
		CertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
	if err := s.change(func(f *file) error { f.Entries = append(f.Entries, e); return nil }); err != nil {
		return Info{}, err
	}
	return s.Info(e.ID)
}

// CSR makes a new key and a certificate signing request for it; the entry
// waits for the signed certificate (Import completes it). It returns the
// entry and the CSR in PEM.
func (s *Store) CSR(req Request) (Info, string, error) {
	dns, ips, err := req.check()
	if err != nil {
		return Info{}, "", err
	}
	key, err := newKey(req.Key)
	if err != nil {
		return Info{}, "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: req.CN}, DNSNames: dns, IPAddresses: ips,
	}, key)
	if err != nil {
		return Info{}, "", fmt.Errorf("certs: make the CSR: %w", err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return Info{}, "", err
	}
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	e := entry{ID: newID(), Name: req.Name, Created: s.now().UTC(), KeyPEM: kp, CSRPEM: csr}
	if err := s.change(func(f *file) error { f.Entries = append(f.Entries, e); return nil }); err != nil {
		return Info{}, "", err
	}
	info, err := s.Info(e.ID)
	return info, csr, err
}
