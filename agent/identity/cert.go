package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"time"

	"keel.dev/keel/agent/atomicfile"
)

var (
	// The box's clock may be unset (1970) or wrong when the certificate is
	// made, and clients' clocks may be off too, so validity starts at a fixed
	// date long past rather than at "now".
	notBefore = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	// The latest expiry; also used when the clock is obviously unset, because
	// now+20y would then lie in the past.
	latestNotAfter = time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC)
	// Before this the clock cannot be right: keel did not exist.
	clockSane = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
)

func notAfter(now time.Time) time.Time {
	if now.Before(clockSane) {
		return latestNotAfter
	}
	t := now.UTC().AddDate(20, 0, 0)
	if t.After(latestNotAfter) {
		return latestNotAfter
	}
	return t
}

func loadOrCreateCert(dir, serial string, hosts []string, now time.Time) (tls.Certificate, error) {
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	certPEM, err := readIfExists(certPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readIfExists(keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	switch {
	case certPEM != nil && keyPEM != nil:
		return loadCert(certPath, keyPath, certPEM, keyPEM)
	case certPEM != nil:
		return tls.Certificate{}, fmt.Errorf("identity: %s exists but its key %s is missing; restore the key from a backup, or delete %s to create a new certificate (clients will see a new fingerprint)", certPath, keyPath, certPath)
	}
	// A key without a certificate is what a power cut between the two writes
	// leaves: keep the key and issue the certificate for it.
	var key *ecdsa.PrivateKey
	if keyPEM != nil {
		if key, err = parseCertKey(keyPEM); err != nil {
			return tls.Certificate{}, fmt.Errorf("identity: %s is corrupt (%v); restore it from a backup, or delete it to create a new certificate", keyPath, err)
		}
	} else {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return tls.Certificate{}, fmt.Errorf("identity: generate certificate key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("identity: encode certificate key: %w", err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
			return tls.Certificate{}, fmt.Errorf("identity: save certificate key: %w", err)
		}
	}
	der, err := selfSign(key, serial, hosts, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := atomicfile.Write(certPath, certPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("identity: save certificate: %w", err)
	}
	return loadCert(certPath, keyPath, certPEM, keyPEM)
}

func loadCert(certPath, keyPath string, certPEM, keyPEM []byte) (tls.Certificate, error) {
	if b, _ := pem.Decode(certPEM); b == nil || b.Type != "CERTIFICATE" {
		return tls.Certificate{}, fmt.Errorf("identity: %s is corrupt (no PEM CERTIFICATE block); restore it from a backup, or delete it to create a new certificate (clients will see a new fingerprint)", certPath)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || !isKeyBlock(b.Type) {
		return tls.Certificate{}, fmt.Errorf("identity: %s is corrupt (no PEM private key block); restore it from a backup, or delete both it and %s to create a new certificate", keyPath, certPath)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("identity: %s and %s do not form a usable certificate (%v); restore them from a backup, or delete both to create a new certificate (clients will see a new fingerprint)", certPath, keyPath, err)
	}
	return c, nil
}

func isKeyBlock(t string) bool {
	return t == "PRIVATE KEY" || t == "EC PRIVATE KEY" || t == "RSA PRIVATE KEY"
}

func parseCertKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("no PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is a %T, not ECDSA", k)
	}
	return key, nil
}

func selfSign(key *ecdsa.PrivateKey, serial string, hosts []string, now time.Time) ([]byte, error) {
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("identity: certificate serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: serial},
		NotBefore:    notBefore,
		NotAfter:     notAfter(now),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// Client auth too, so the same certificate can identify this box
		// when it connects to its failover peer.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range append(slices.Clone(hosts), "localhost", "127.0.0.1", "::1") {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("identity: create certificate: %w", err)
	}
	return der, nil
}
