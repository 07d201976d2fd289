package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"keel.dev/keel/agent/api"
)

// TLSSettings is the HTTPS server's protocol settings.
type TLSSettings struct {
	MinVersion string `json:"min_version"` // "1.2" or "1.3"
	// CipherSuites are the TLS 1.2 suites offered, by their IANA names
	// (TLS 1.3's are fixed by the protocol); empty: Go's defaults.
	CipherSuites []string `json:"cipher_suites"`
}

// DefaultTLS is TLS 1.2 and later with Go's default suites.
func DefaultTLS() TLSSettings { return TLSSettings{MinVersion: "1.2", CipherSuites: []string{}} }

// Suites are the TLS 1.2 cipher suites one may choose: Go's secure ones
// with forward secrecy (ECDHE).
func Suites() []string {
	var out []string
	for _, c := range tls.CipherSuites() {
		if slices.Contains(c.SupportedVersions, tls.VersionTLS12) && strings.HasPrefix(c.Name, "TLS_ECDHE_") {
			out = append(out, c.Name)
		}
	}
	return out
}

func (t TLSSettings) check() ([]uint16, uint16, error) {
	var min uint16
	switch t.MinVersion {
	case "1.2", "":
		min = tls.VersionTLS12
	case "1.3":
		min = tls.VersionTLS13
	default:
		return nil, 0, api.FieldError{Field: "min_version", Problem: "use 1.2 or 1.3"}
	}
	offered := map[string]uint16{}
	for _, c := range tls.CipherSuites() {
		if slices.Contains(c.SupportedVersions, tls.VersionTLS12) && strings.HasPrefix(c.Name, "TLS_ECDHE_") {
			offered[c.Name] = c.ID
		}
	}
	var ids []uint16
	for _, n := range t.CipherSuites {
		id, ok := offered[n]
		if !ok {
			return nil, 0, api.FieldError{Field: "cipher_suites", Problem: fmt.Sprintf("%q is not offered; choose from %v", n, Suites())}
		}
		ids = append(ids, id)
	}
	return ids, min, nil
}

// TLS returns the settings in force.
func (s *Store) TLS() TLSSettings {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.f.TLS
	t.CipherSuites = slices.Clone(t.CipherSuites)
	if t.CipherSuites == nil {
		t.CipherSuites = []string{}
	}
	return t
}

// SetTLS saves new settings; they apply to new connections. A minimum of
// 1.2 with no suite chosen is refused only if it would leave none.
func (s *Store) SetTLS(t TLSSettings) error {
	if t.MinVersion == "" {
		t.MinVersion = "1.2"
	}
	if _, _, err := t.check(); err != nil {
		return err
	}
	if t.CipherSuites == nil {
		t.CipherSuites = []string{}
	}
	return s.change(func(f *file) error { f.TLS = t; return nil })
}

// ConfigForClient is tls.Config.GetConfigForClient for the HTTPS server:
// the certificate for the address the connection came to, or the name
// the client asked for, or the default; and the TLS settings.
func (s *Store) ConfigForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	cert, err := s.certificateFor(hello)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	suites, min := s.suites, s.minVersion
	s.mu.Unlock()
	return &tls.Config{
		MinVersion:   min,
		CipherSuites: suites,
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

func (s *Store) certificateFor(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if hello.Conn != nil {
		if ta, ok := hello.Conn.LocalAddr().(*net.TCPAddr); ok {
			if ip, ok := netip.AddrFromSlice(ta.IP); ok {
				if id, ok := s.f.Assignments.ByAddress[ip.Unmap().String()]; ok {
					if c := s.loaded[id]; c != nil {
						return c, nil
					}
				}
			}
		}
	}
	if hello.ServerName != "" {
		// Entries the operator added, in order; the appliance's own only
		// as the default.
		for _, e := range s.f.Entries {
			if c := s.loaded[e.ID]; c != nil && c.Leaf != nil && c.Leaf.VerifyHostname(hello.ServerName) == nil {
				return c, nil
			}
		}
	}
	if c := s.loaded[s.f.Assignments.Default]; c != nil {
		return c, nil
	}
	if c := s.loaded[Builtin]; c != nil {
		return c, nil
	}
	return nil, errors.New("certs: no certificate to serve")
}
