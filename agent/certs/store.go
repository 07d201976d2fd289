// Package certs owns what the appliance's HTTPS server presents: the
// certificates with their keys (the appliance's own, self-signed ones
// made here, and ones a CA signed, from a CSR made here or imported with
// their key), which one answers for which of the box's addresses and
// which by default, and the TLS settings (minimum version, TLS 1.2 cipher
// suites). Everything is kept in one file on the data partition, written
// atomically; the appliance's own certificate stays where package
// identity keeps it and can be neither replaced nor deleted here.
package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/atomicfile"
)

// Builtin is the id of the appliance's own certificate (package identity).
const Builtin = "appliance"

const fileVersion = 1

// Errors a caller tells apart; each says what to do.
var (
	ErrUnknown = errors.New("there is no certificate with that id; check the list on the Security page")
	ErrBuiltin = errors.New("the appliance's own certificate cannot be deleted or replaced; it stays for recovery and for pinning")
	ErrInUse   = errors.New("the certificate is in use (the default, or assigned to an address); choose another for those first")
)

// entry is one certificate as the file keeps it.
type entry struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// CertPEM is the certificate, then its chain towards the root;
	// empty while a CSR waits for its signed certificate.
	CertPEM string `json:"cert_pem,omitempty"`
	KeyPEM  string `json:"key_pem"` // PKCS#8
	CSRPEM  string `json:"csr_pem,omitempty"`
}

// Assignments says which certificate answers where: by the box's address
// a connection arrived on, else by the name the client asked for (SNI)
// among the certificates, else Default.
type Assignments struct {
	Default   string            `json:"default"`
	ByAddress map[string]string `json:"by_address"` // IP address → id
}

type file struct {
	Version     int         `json:"version"`
	Entries     []entry     `json:"entries"`
	Assignments Assignments `json:"assignments"`
	TLS         TLSSettings `json:"tls"`
}

// Store is the certificates. Create it with Open.
type Store struct {
	// Hostname is the box's host name, for the name-mismatch warning;
	// set it before use. Optional.
	Hostname func() string

	path    string
	builtin tls.Certificate
	now     func() time.Time

	mu     sync.Mutex
	f      file
	loaded map[string]*tls.Certificate // id → parsed, for entries with a certificate
	// suites and minVersion are f.TLS parsed, once per change rather
	// than at every handshake.
	suites     []uint16
	minVersion uint16
}

// Open loads path (missing: only the appliance's own certificate, which
// is the default). builtin is the identity's certificate.
func Open(path string, builtin tls.Certificate, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	s := &Store{path: path, builtin: builtin, now: now}
	s.f = file{Version: fileVersion, Assignments: Assignments{Default: Builtin, ByAddress: map[string]string{}}, TLS: DefaultTLS()}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("certs: read %s: %w", path, err)
	default:
		var f file
		if err := json.Unmarshal(data, &f); err != nil || f.Version != fileVersion {
			return nil, fmt.Errorf("certs: %s is damaged or from a newer agent (%v); the appliance serves its own certificate; restore the file from a backup or delete it and import the certificates again", path, err)
		}
		if f.Assignments.ByAddress == nil {
			f.Assignments.ByAddress = map[string]string{}
		}
		s.f = f
	}
	if err := s.parseAll(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the file again after something else replaced it (a
// failover backup's sync); a file that cannot be used leaves the
// certificates as they were.
func (s *Store) Reload() error {
	n, err := Open(s.path, s.builtin, s.now)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f, s.loaded, s.suites, s.minVersion = n.f, n.loaded, n.suites, n.minVersion
	return nil
}

// parseAll rebuilds the parsed certificates; callers hold mu or own s.
func (s *Store) parseAll() error {
	loaded := map[string]*tls.Certificate{Builtin: &s.builtin}
	for _, e := range s.f.Entries {
		if e.CertPEM == "" {
			continue
		}
		c, err := tls.X509KeyPair([]byte(e.CertPEM), []byte(e.KeyPEM))
		if err != nil {
			return fmt.Errorf("certs: certificate %s (%s) in %s cannot be used: %v; delete it and import it again", e.ID, e.Name, s.path, err)
		}
		loaded[e.ID] = &c
	}
	s.loaded = loaded
	var err error
	if s.suites, s.minVersion, err = s.f.TLS.check(); err != nil {
		// The file was edited by hand: stay safe and reachable.
		s.suites, s.minVersion = nil, tls.VersionTLS12
	}
	return nil
}

// change applies f to a copy of the file, saves it, and takes it.
func (s *Store) change(f func(*file) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.f
	next.Entries = slices.Clone(s.f.Entries)
	next.Assignments.ByAddress = make(map[string]string, len(s.f.Assignments.ByAddress))
	for k, v := range s.f.Assignments.ByAddress {
		next.Assignments.ByAddress[k] = v
	}
	next.TLS.CipherSuites = slices.Clone(s.f.TLS.CipherSuites)
	if err := f(&next); err != nil {
		return err
	}
	data, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return fmt.Errorf("certs: encode: %w", err)
	}
	prev, prevLoaded, prevSuites, prevMin := s.f, s.loaded, s.suites, s.minVersion
	restore := func() { s.f, s.loaded, s.suites, s.minVersion = prev, prevLoaded, prevSuites, prevMin }
	s.f = next
	if err := s.parseAll(); err != nil {
		restore()
		return err
	}
	if err := atomicfile.Write(s.path, append(data, '\n'), 0o600); err != nil {
		restore()
		return fmt.Errorf("certs: save %s: %w", s.path, err)
	}
	return nil
}

func (f *file) find(id string) int {
	return slices.IndexFunc(f.Entries, func(e entry) bool { return e.ID == id })
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return "c-" + hex.EncodeToString(b[:])
}

// Delete removes a certificate that is neither the default nor assigned.
func (s *Store) Delete(id string) error {
	if id == Builtin {
		return ErrBuiltin
	}
	return s.change(func(f *file) error {
		i := f.find(id)
		if i < 0 {
			return ErrUnknown
		}
		if f.Assignments.Default == id {
			return ErrInUse
		}
		for _, v := range f.Assignments.ByAddress {
			if v == id {
				return ErrInUse
			}
		}
		f.Entries = slices.Delete(f.Entries, i, i+1)
		return nil
	})
}

// Assign replaces the assignments; every id must be a certificate with
// its signed certificate, every address an IP address.
func (s *Store) Assign(a Assignments) error {
	if a.Default == "" {
		a.Default = Builtin
	}
	return s.change(func(f *file) error {
		usable := func(id string) bool {
			if id == Builtin {
				return true
			}
			i := f.find(id)
			return i >= 0 && f.Entries[i].CertPEM != ""
		}
		if !usable(a.Default) {
			return api.FieldError{Field: "default", Problem: "certificate " + a.Default + " does not exist or waits for its signed certificate"}
		}
		by := map[string]string{}
		for addr, id := range a.ByAddress {
			ip, err := netip.ParseAddr(addr)
			if err != nil {
				return api.FieldError{Field: "by_address", Problem: fmt.Sprintf("%q is not an IP address", addr)}
			}
			if !usable(id) {
				return api.FieldError{Field: "by_address", Problem: "certificate " + id + " (for " + addr + ") does not exist or waits for its signed certificate"}
			}
			by[ip.Unmap().String()] = id
		}
		f.Assignments = Assignments{Default: a.Default, ByAddress: by}
		return nil
	})
}

// Assignments returns the assignments in force.
func (s *Store) Assignments() Assignments {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.f.Assignments
	a.ByAddress = make(map[string]string, len(s.f.Assignments.ByAddress))
	for k, v := range s.f.Assignments.ByAddress {
		a.ByAddress[k] = v
	}
	return a
}

// publicKeyOf is a signer's public key, for comparing keys.
func publicKeyOf(k crypto.PrivateKey) crypto.PublicKey {
	if s, ok := k.(crypto.Signer); ok {
		return s.Public()
	}
	return nil
}

func sameKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && b != nil && e.Equal(b)
}

func keyPEM(k crypto.PrivateKey) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("encode key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
}
