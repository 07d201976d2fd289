package certs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"sort"
	"time"

	"keel.dev/keel/agent/identity"
)

// Info is one certificate as the Security page and GET
// /api/v1/certificates show it.
type Info struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Subject     string    `json:"subject"`
	SANs        []string  `json:"sans"`
	Issuer      string    `json:"issuer"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Fingerprint string    `json:"sha256"` // of the certificate, colon-separated hex
	Key         string    `json:"key"`    // "ECDSA P-256", "RSA 2048"
	SelfSigned  bool      `json:"self_signed"`
	Chain       int       `json:"chain"`       // certificates after this one
	PendingCSR  bool      `json:"pending_csr"` // waits for its signed certificate
	Builtin     bool      `json:"builtin"`     // the appliance's own
	Default     bool      `json:"default"`
	Addresses   []string  `json:"addresses"` // the addresses it is assigned to
	Warnings    []string  `json:"warnings"`  // sentences
}

// List is every certificate, the appliance's own first.
func (s *Store) List() []Info {
	s.mu.Lock()
	ids := []string{Builtin}
	for _, e := range s.f.Entries {
		ids = append(ids, e.ID)
	}
	s.mu.Unlock()
	out := make([]Info, 0, len(ids))
	for _, id := range ids {
		if i, err := s.Info(id); err == nil {
			out = append(out, i)
		}
	}
	return out
}

// Info describes one certificate, with its warnings.
func (s *Store) Info(id string) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := Info{ID: id, SANs: []string{}, Addresses: []string{}, Warnings: []string{}}
	var certs []*x509.Certificate
	var keyMatches = true
	switch id {
	case Builtin:
		info.Name, info.Builtin = "The appliance's own certificate", true
		for _, der := range s.builtin.Certificate {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return Info{}, fmt.Errorf("certs: the appliance's certificate: %w", err)
			}
			certs = append(certs, c)
		}
	default:
		i := s.f.find(id)
		if i < 0 {
			return Info{}, ErrUnknown
		}
		e := s.f.Entries[i]
		info.Name = e.Name
		if e.CertPEM == "" {
			info.PendingCSR = true
			if b, _ := pem.Decode([]byte(e.CSRPEM)); b != nil {
				if csr, err := x509.ParseCertificateRequest(b.Bytes); err == nil {
					info.Subject = csr.Subject.String()
					info.SANs = sans(csr.DNSNames, csr.IPAddresses)
					info.Key = keyName(csr.PublicKey)
				}
			}
			info.Warnings = append(info.Warnings, "waits for its certificate: have a CA sign the CSR, then import the signed certificate")
			return info, nil
		}
		certs = parseChain(e.CertPEM)
		if len(certs) == 0 {
			return Info{}, fmt.Errorf("certs: certificate %s is damaged", id)
		}
		if k, err := parseKey([]byte(e.KeyPEM)); err != nil || !sameKey(certs[0].PublicKey, publicKeyOf(k)) {
			keyMatches = false
		}
	}
	leaf := certs[0]
	info.Subject, info.Issuer = leaf.Subject.String(), leaf.Issuer.String()
	info.SANs = sans(leaf.DNSNames, leaf.IPAddresses)
	info.NotBefore, info.NotAfter = leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
	info.Fingerprint = identity.Fingerprint(leaf.Raw)
	info.Key = keyName(leaf.PublicKey)
	info.Chain = len(certs) - 1
	info.SelfSigned = leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature) == nil && leaf.Subject.String() == leaf.Issuer.String()
	info.Default = s.f.Assignments.Default == id
	for addr, a := range s.f.Assignments.ByAddress {
		if a == id {
			info.Addresses = append(info.Addresses, addr)
		}
	}
	sort.Strings(info.Addresses)

	now := s.now()
	switch {
	case now.After(leaf.NotAfter):
		info.Warnings = append(info.Warnings, "expired on "+leaf.NotAfter.UTC().Format("2006-01-02")+": browsers refuse it; renew it")
	case now.Before(leaf.NotBefore):
		info.Warnings = append(info.Warnings, "not valid before "+leaf.NotBefore.UTC().Format("2006-01-02")+" (is the appliance's clock right?)")
	case leaf.NotAfter.Sub(now) < 30*24*time.Hour:
		info.Warnings = append(info.Warnings, fmt.Sprintf("expires in %d days (%s): renew it", int(leaf.NotAfter.Sub(now).Hours()/24), leaf.NotAfter.UTC().Format("2006-01-02")))
	}
	if info.SelfSigned {
		info.Warnings = append(info.Warnings, "self-signed: browsers warn unless it is trusted by hand or pinned")
	}
	if s.Hostname != nil {
		if h := s.Hostname(); h != "" && leaf.VerifyHostname(h) != nil {
			info.Warnings = append(info.Warnings, "does not name the host name "+h)
		}
	}
	for _, addr := range info.Addresses {
		if leaf.VerifyHostname(addr) != nil {
			info.Warnings = append(info.Warnings, "is assigned to "+addr+" but does not name that address")
		}
	}
	if !keyMatches {
		info.Warnings = append(info.Warnings, "its key does not match the certificate: it cannot be served; import it again with its key")
	}
	if !info.SelfSigned && info.Chain == 0 && !info.Builtin {
		info.Warnings = append(info.Warnings, "no chain was imported with it: clients that lack the issuing CA's intermediate certificate will refuse it")
	}
	return info, nil
}

func sans(dns []string, ips []net.IP) []string {
	out := append([]string{}, dns...)
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

func keyName(pub any) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.Size()*8)
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", pub)
}

func parseChain(pemText string) []*x509.Certificate {
	var out []*x509.Certificate
	rest := []byte(pemText)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}
