package failover

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
)

// PeerServerName is the TLS server name a box asks for when it talks to
// its peer: the API's TLS setup answers it with the box's own identity
// certificate and asks for the caller's (PeerTLS), whatever certificate
// the operator assigned to the address.
const PeerServerName = "keel-failover-peer"

// The peer protocol: HTTP/1.1 over TLS 1.3 on the API's port, under
// /failover/v1/. Both boxes present their identity certificates, pinned
// when the relationship is made. Every request and every answer carries
// an HMAC under the inter-appliance key of the TLS connection's exported
// keying material (RFC 8446 7.5): it proves the sender holds the key
// without sending it, and binds the proof to this one TLS connection, so
// a machine in the middle (which would need two connections) cannot relay
// it.
const (
	peerPrefix      = "/failover/v1/"
	exporterLabel   = "EXPORTER-keel-failover"
	authHeader      = "Keel-Peer-Auth"
	proofHeader     = "Keel-Peer-Proof"
	maxPeerRequest  = 16 << 20
	peerCallTimeout = 20 * time.Second
)

// PeerTLS wraps the API's per-connection TLS choice: a connection that
// asks for PeerServerName gets the box's identity certificate and must
// present one of its own; every other connection gets next's choice (nil
// next: the server's default).
func PeerTLS(identity tls.Certificate, next func(*tls.ClientHelloInfo) (*tls.Config, error)) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	peer := &tls.Config{
		Certificates: []tls.Certificate{identity},
		ClientAuth:   tls.RequireAnyClientCert,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{"http/1.1"},
	}
	return func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if h.ServerName == PeerServerName {
			return peer, nil
		}
		if next == nil {
			return nil, nil
		}
		return next(h)
	}
}

func exporter(cs tls.ConnectionState) ([]byte, error) {
	return cs.ExportKeyingMaterial(exporterLabel, nil, 32)
}

func certFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func requestMAC(key string, ekm []byte, serial, nonce, method, path string, body []byte) string {
	sum := sha256.Sum256(body)
	m := hmac.New(sha256.New, []byte(key))
	for _, p := range [][]byte{[]byte("keel failover request v1"), ekm, []byte(serial), []byte(nonce), []byte(method), []byte(path), sum[:]} {
		m.Write(p)
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

func answerMAC(key string, ekm []byte, serial, nonce string, code int) string {
	m := hmac.New(sha256.New, []byte(key))
	for _, p := range [][]byte{[]byte("keel failover answer v1"), ekm, []byte(serial), []byte(nonce), []byte(strconv.Itoa(code))} {
		m.Write(p)
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// errKeyMismatch: the peer's proof does not verify under this box's key.
var errKeyMismatch = errors.New("the appliances' inter-appliance keys differ (or something between them intercepts the connection): compare the key fingerprints on both Security pages and paste the same key into both")

// peerCall is one request to the peer.
type peerCall struct {
	Addr   string // host:port
	Pin    string // hex SHA-256 of the certificate the peer must present; "" takes any (establish)
	Method string
	Path   string
	Body   any // JSON; nil: none
	// OnCert learns the peer's certificate fingerprint as soon as the
	// handshake has it, before the request is sent.
	OnCert func(fp string)
	// Timeout bounds the handshake and the wait for the answer's head; 0:
	// peerCallTimeout. A sync's manifest waits for the primary to hash
	// what changed since the last.
	Timeout time.Duration
}

// peerAnswer is the peer's answer; Body streams and must be closed.
type peerAnswer struct {
	Code   int
	Serial string // the peer's, from its proof
	Cert   string // the fingerprint of the certificate it presented
	Body   io.ReadCloser
}

// count adds the bytes of the answer's body to n as they are read.
func (a *peerAnswer) count(n *int64) {
	body := a.Body
	a.Body = closer{io.NopCloser(counter{body, n}), func() { body.Close() }}
}

// decode reads a JSON answer into v, or turns an error answer into an
// error carrying the peer's sentence.
func (a *peerAnswer) decode(v any) error {
	defer a.Body.Close()
	b, err := io.ReadAll(io.LimitReader(a.Body, maxPeerRequest))
	if err != nil {
		return fmt.Errorf("read the peer's answer: %w", err)
	}
	if a.Code/100 != 2 {
		var e api.Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return &peerRefusal{Code: a.Code, Sentence: e.Error}
		}
		return &peerRefusal{Code: a.Code, Sentence: fmt.Sprintf("the peer answered %d %s", a.Code, http.StatusText(a.Code))}
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("the peer's answer is not what this version expects (%v): are both appliances on the same version?", err)
	}
	return nil
}

// peerRefusal is an answer of the peer that refused the request; its
// sentence is the peer's own.
type peerRefusal struct {
	Code     int
	Sentence string
}

func (e *peerRefusal) Error() string { return "the peer refused: " + e.Sentence }

// call makes one request on a new TLS connection and checks the peer's
// proof before anything of its answer is used.
func (s *Service) call(ctx context.Context, c peerCall) (*peerAnswer, error) {
	key := s.Key()
	if key == "" {
		return nil, errors.New("no inter-appliance key is set: generate one on the Security page and paste it into both appliances")
	}
	var body []byte
	if c.Body != nil {
		var err error
		if body, err = json.Marshal(c.Body); err != nil {
			return nil, err
		}
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = peerCallTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	raw, err := s.dial(ctx, c.Addr)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("the peer at %s cannot be reached: %w", c.Addr, err)
	}
	// The connection outlives this function while the body streams;
	// the timeout covers the handshake and the answer's head.
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	conn := tls.Client(raw, &tls.Config{
		ServerName:         PeerServerName,
		Certificates:       []tls.Certificate{s.Cert},
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"http/1.1"},
		InsecureSkipVerify: true, // the pin below is the check
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the peer presented no certificate")
			}
			got := certFingerprint(cs.PeerCertificates[0].Raw)
			if c.Pin != "" && got != c.Pin {
				return fmt.Errorf("the peer presented another certificate (SHA-256 %s) than the one pinned when the relationship was made (%s): if it was reinstalled, break the relationship and establish it again", short(got), short(c.Pin))
			}
			if c.OnCert != nil {
				c.OnCert(got)
			}
			return nil
		},
	})
	fail := func(err error) (*peerAnswer, error) {
		stop()
		cancel()
		conn.Close()
		return nil, err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		return fail(fmt.Errorf("TLS with the peer at %s: %w", c.Addr, err))
	}
	cs := conn.ConnectionState()
	ekm, err := exporter(cs)
	if err != nil {
		return fail(err)
	}
	nonce := newNonce()
	req, err := http.NewRequest(c.Method, "https://"+PeerServerName+c.Path, bytes.NewReader(body))
	if err != nil {
		return fail(err)
	}
	req.Close = true
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(authHeader, s.Serial+" "+nonce+" "+requestMAC(key, ekm, s.Serial, nonce, c.Method, c.Path, body))
	if err := req.Write(conn); err != nil {
		return fail(fmt.Errorf("send to the peer: %w", err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return fail(fmt.Errorf("the peer at %s did not answer: %w", c.Addr, err))
	}
	stop()
	serial, mac, _ := strings.Cut(resp.Header.Get(proofHeader), " ")
	if !hmac.Equal([]byte(mac), []byte(answerMAC(key, ekm, serial, nonce, resp.StatusCode))) {
		resp.Body.Close()
		cancel()
		conn.Close()
		if resp.StatusCode == http.StatusNotFound && serial == "" {
			return nil, fmt.Errorf("%s answers, but not as a keel appliance that knows failover", c.Addr)
		}
		return nil, errKeyMismatch
	}
	return &peerAnswer{Code: resp.StatusCode, Serial: serial, Cert: certFingerprint(cs.PeerCertificates[0].Raw),
		Body: closer{resp.Body, func() { cancel(); conn.Close() }}}, nil
}

type closer struct {
	io.ReadCloser
	after func()
}

func (c closer) Close() error {
	err := c.ReadCloser.Close()
	c.after()
	return err
}

func (s *Service) dial(ctx context.Context, addr string) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, "tcp", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

func newNonce() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}

// peerRequest is an authenticated request of the peer, as a handler
// sees it.
type peerRequest struct {
	*http.Request
	Serial string // the caller's
	Cert   string // the fingerprint of the certificate it presented
	Body   []byte
}

// peerHandler authenticates a request of the peer protocol: the right
// TLS server name, a client certificate, and an HMAC under this box's key
// of this connection's keying material. With pinned, the caller must be
// the peer of the relationship, presenting the pinned certificate. The
// answer carries this box's proof.
func (s *Service) peerHandler(pinned bool, h func(w http.ResponseWriter, r *peerRequest)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.TLS.ServerName != PeerServerName || len(r.TLS.PeerCertificates) == 0 {
			api.WriteError(w, http.StatusNotFound, "there is no such endpoint; check the path against the API documentation")
			return
		}
		serial, rest, _ := strings.Cut(r.Header.Get(authHeader), " ")
		nonce, mac, _ := strings.Cut(rest, " ")
		key := s.Key()
		ekm, err := exporter(*r.TLS)
		if err != nil || key == "" || serial == "" || nonce == "" {
			// Without a key this box cannot prove anything: answer
			// without a proof, which the caller reads as a mismatch.
			api.WriteError(w, http.StatusForbidden, "this appliance has no inter-appliance key, or the request carries no proof")
			return
		}
		proof := func(code int) {
			w.Header().Set(proofHeader, s.Serial+" "+answerMAC(key, ekm, s.Serial, nonce, code))
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPeerRequest))
		if err != nil {
			proof(http.StatusBadRequest)
			api.WriteError(w, http.StatusBadRequest, "the request's body cannot be read: "+err.Error())
			return
		}
		if !hmac.Equal([]byte(mac), []byte(requestMAC(key, ekm, serial, nonce, r.Method, r.URL.Path, body))) {
			s.log().Warn("a peer request did not verify under the inter-appliance key", "from", r.RemoteAddr, "serial", serial)
			// No proof: a caller with another key must not learn
			// anything it could check a guess against.
			api.WriteError(w, http.StatusForbidden, errKeyMismatch.Error())
			return
		}
		pr := &peerRequest{Request: r, Serial: serial, Cert: certFingerprint(r.TLS.PeerCertificates[0].Raw), Body: body}
		if pinned {
			st := s.State()
			if !st.In() || st.Peer.Serial != serial {
				proof(http.StatusConflict)
				api.WriteError(w, http.StatusConflict, fmt.Sprintf("%s is not in a failover relationship with %s", s.Serial, serial))
				return
			}
			if st.Peer.CertSHA256 != pr.Cert {
				proof(http.StatusForbidden)
				api.WriteError(w, http.StatusForbidden, fmt.Sprintf("%s presented another certificate than the one pinned when the relationship was made: break the relationship and establish it again", serial))
				return
			}
		}
		h(proofWriter{ResponseWriter: w, proof: proof}, pr)
	})
}

// proofWriter adds the proof for the status the handler answers.
type proofWriter struct {
	http.ResponseWriter
	proof func(int)
}

func (p proofWriter) WriteHeader(code int) {
	p.proof(code)
	p.ResponseWriter.WriteHeader(code)
}

func (p proofWriter) Write(b []byte) (int, error) {
	if p.ResponseWriter.Header().Get(proofHeader) == "" {
		p.WriteHeader(http.StatusOK)
	}
	return p.ResponseWriter.Write(b)
}

func (p proofWriter) Flush() {
	if f, ok := p.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func decodeBody(r *peerRequest, v any) error {
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	return dec.Decode(v)
}
