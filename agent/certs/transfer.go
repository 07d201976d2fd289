package certs

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"keel.dev/keel/agent/api"
	"software.sslmate.com/src/go-pkcs12"
)

// Import is a certificate coming in: PEM (the certificate with its chain,
// and its key unless a CSR made here has it), or PKCS#12 with its
// passphrase.
type Import struct {
	Name       string `json:"name,omitempty"`
	CertPEM    string `json:"cert_pem,omitempty"`
	KeyPEM     string `json:"key_pem,omitempty"`
	PKCS12     []byte `json:"pkcs12,omitempty"` // base64 in JSON
	Passphrase string `json:"passphrase,omitempty"`
}

// maxImport bounds what an import parses.
const maxImport = 256 << 10

// Import adds a certificate, or completes the CSR whose key it matches.
func (s *Store) Import(in Import) (Info, error) {
	var certs []*x509.Certificate
	var key crypto.PrivateKey
	switch {
	case len(in.PKCS12) > 0:
		if len(in.PKCS12) > maxImport {
			return Info{}, api.FieldError{Field: "pkcs12", Problem: "the file is larger than 256 KiB; it is not a certificate bundle"}
		}
		k, leaf, cas, err := pkcs12.DecodeChain(in.PKCS12, in.Passphrase)
		if errors.Is(err, pkcs12.ErrIncorrectPassword) {
			return Info{}, api.FieldError{Field: "passphrase", Problem: "the passphrase does not open this PKCS#12 file"}
		}
		if err != nil {
			return Info{}, api.FieldError{Field: "pkcs12", Problem: "the file is not a PKCS#12 bundle with one key and its certificate (" + err.Error() + ")"}
		}
		key, certs = k, append([]*x509.Certificate{leaf}, cas...)
	case strings.TrimSpace(in.CertPEM) != "":
		if len(in.CertPEM)+len(in.KeyPEM) > maxImport {
			return Info{}, api.FieldError{Field: "cert_pem", Problem: "the text is larger than 256 KiB; it is not a certificate and chain"}
		}
		var err error
		certs, key, err = parsePEM(in.CertPEM + "\n" + in.KeyPEM)
		if err != nil {
			return Info{}, err
		}
	default:
		return Info{}, api.FieldError{Field: "cert_pem", Problem: "paste the certificate (with its chain) in PEM, or upload a PKCS#12 file"}
	}
	if len(certs) == 0 {
		return Info{}, api.FieldError{Field: "cert_pem", Problem: "no certificate was found; paste the text from -----BEGIN CERTIFICATE----- on"}
	}

	var result string
	err := s.change(func(f *file) error {
		leafAt, keyPEMText, csrAt := -1, "", -1
		if key != nil {
			for i, c := range certs {
				if sameKey(c.PublicKey, publicKeyOf(key)) {
					leafAt = i
				}
			}
			if leafAt < 0 {
				return api.FieldError{Field: "key_pem", Problem: "the key does not belong to any of the certificates given; import the certificate with its own key"}
			}
			kp, err := keyPEM(key)
			if err != nil {
				return err
			}
			keyPEMText = kp
		} else {
			// No key: it must be the answer to a CSR made here.
			for ei, e := range f.Entries {
				if e.CertPEM != "" {
					continue
				}
				k, err := parseKey([]byte(e.KeyPEM))
				if err != nil {
					continue
				}
				for i, c := range certs {
					if sameKey(c.PublicKey, publicKeyOf(k)) {
						leafAt, csrAt, keyPEMText = i, ei, e.KeyPEM
					}
				}
			}
			if leafAt < 0 {
				return api.FieldError{Field: "key_pem", Problem: "no key for this certificate: it answers none of the CSRs made here; import it with its key (PEM or PKCS#12)"}
			}
		}
		chain := orderChain(certs, leafAt)
		var b strings.Builder
		for _, c := range chain {
			pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		if csrAt >= 0 {
			e := &f.Entries[csrAt]
			e.CertPEM, e.CSRPEM = b.String(), ""
			if in.Name != "" {
				e.Name = in.Name
			}
			result = e.ID
			return nil
		}
		name := strings.TrimSpace(in.Name)
		if name == "" {
			name = chain[0].Subject.CommonName
		}
		e := entry{ID: newID(), Name: name, Created: s.now().UTC(), CertPEM: b.String(), KeyPEM: keyPEMText}
		f.Entries = append(f.Entries, e)
		result = e.ID
		return nil
	})
	if err != nil {
		return Info{}, err
	}
	return s.Info(result)
}

// orderChain puts the leaf first, then each certificate's issuer, then
// whatever is left (a cross-signed extra, say), so clients get the order
// TLS asks for.
func orderChain(certs []*x509.Certificate, leafAt int) []*x509.Certificate {
	out := []*x509.Certificate{certs[leafAt]}
	used := map[int]bool{leafAt: true}
	for {
		cur := out[len(out)-1]
		next := -1
		for i, c := range certs {
			if !used[i] && cur.CheckSignatureFrom(c) == nil {
				next = i
				break
			}
		}
		if next < 0 {
			break
		}
		used[next] = true
		out = append(out, certs[next])
	}
	for i, c := range certs {
		if !used[i] {
			out = append(out, c)
		}
	}
	return out
}

func parsePEM(text string) ([]*x509.Certificate, crypto.PrivateKey, error) {
	var certs []*x509.Certificate
	var key crypto.PrivateKey
	rest := []byte(text)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch {
		case b.Type == "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, api.FieldError{Field: "cert_pem", Problem: "a certificate in the text cannot be read (" + err.Error() + ")"}
			}
			certs = append(certs, c)
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			if key != nil {
				return nil, nil, api.FieldError{Field: "key_pem", Problem: "give one private key, not several"}
			}
			if b.Type == "ENCRYPTED PRIVATE KEY" || b.Headers["Proc-Type"] != "" {
				return nil, nil, api.FieldError{Field: "key_pem", Problem: "the key is encrypted; decrypt it first (openssl pkey -in key.pem -out plain.pem) or import a PKCS#12 file with its passphrase"}
			}
			k, err := parseKey(pem.EncodeToMemory(b))
			if err != nil {
				return nil, nil, api.FieldError{Field: "key_pem", Problem: err.Error()}
			}
			key = k
		}
	}
	return certs, key, nil
}

// parseKey reads a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) private key in PEM.
func parseKey(data []byte) (crypto.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("the key is not in PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, errors.New("the private key cannot be read: use PKCS#8, EC or RSA in PEM")
}

// Export formats.
const (
	FormatPKCS12 = "pkcs12"
	FormatPEM    = "pem"
)

// Export is a certificate going out: PKCS#12 (certificate, key and chain,
// under a passphrase) or PEM (certificate and chain, and the key when
// IncludeKey).
type Export struct {
	Format     string `json:"format"`
	Passphrase string `json:"passphrase,omitempty"`
	IncludeKey bool   `json:"include_key,omitempty"`
}

// Export encodes certificate id; it returns the bytes, their media type
// and a file name.
func (s *Store) Export(id string, ex Export) ([]byte, string, string, error) {
	s.mu.Lock()
	var chainPEM, kp string
	if id == Builtin {
		var b strings.Builder
		for _, der := range s.builtin.Certificate {
			pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		chainPEM = b.String()
		if k, err := keyPEM(s.builtin.PrivateKey); err == nil {
			kp = k
		}
	} else if i := s.f.find(id); i >= 0 {
		chainPEM, kp = s.f.Entries[i].CertPEM, s.f.Entries[i].KeyPEM
	} else {
		s.mu.Unlock()
		return nil, "", "", ErrUnknown
	}
	s.mu.Unlock()
	if chainPEM == "" {
		return nil, "", "", api.FieldError{Field: "id", Problem: "this entry waits for its signed certificate; there is nothing to export yet (its CSR is on the Security page)"}
	}
	certs := parseChain(chainPEM)
	switch ex.Format {
	case FormatPKCS12:
		if len(ex.Passphrase) < 8 {
			return nil, "", "", api.FieldError{Field: "passphrase", Problem: "choose a passphrase of at least 8 characters: the file holds the private key"}
		}
		key, err := parseKey([]byte(kp))
		if err != nil {
			return nil, "", "", fmt.Errorf("certs: the key of %s: %w", id, err)
		}
		p12, err := pkcs12.Modern2023.Encode(key, certs[0], certs[1:], ex.Passphrase)
		if err != nil {
			return nil, "", "", fmt.Errorf("certs: encode PKCS#12: %w", err)
		}
		return p12, "application/x-pkcs12", id + ".p12", nil
	case FormatPEM, "":
		out := chainPEM
		if ex.IncludeKey {
			out += kp
		}
		return []byte(out), "application/x-pem-file", id + ".pem", nil
	}
	return nil, "", "", api.FieldError{Field: "format", Problem: "use pkcs12 or pem"}
}

// CSRText is the CSR of an entry that waits for its certificate.
func (s *Store) CSRText(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.f.find(id)
	if i < 0 {
		return "", ErrUnknown
	}
	if s.f.Entries[i].CSRPEM == "" {
		return "", api.FieldError{Field: "id", Problem: "this certificate has no CSR waiting"}
	}
	return s.f.Entries[i].CSRPEM, nil
}
