package webui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"keel.dev/keel/agent/access"
	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/certs"
	"keel.dev/keel/agent/peerkey"
)

// securityView is the Security page: the certificates, where each is
// served, and the TLS settings.
type securityView struct {
	certs.List
	TLS       certs.TLSView
	Usable    []certs.Info // those that can be served (not waiting for a CSR's answer)
	Addresses []string     // the box's addresses, offered for an assignment
	CSR       string       // a CSR just made, to copy
	// Rows are the address assignments, then empty rows to add more.
	Rows []assignRow
	// Access is the allowed networks; Client the browser's address.
	Access access.Rules
	Client string
	// PeerKey is the inter-appliance key's state; NewKey a key just
	// generated, shown this once.
	PeerKey peerkey.View
	NewKey  string
}

type assignRow struct{ Address, ID string }

func (u *UI) securityPage(w http.ResponseWriter, r *http.Request, ses Session) {
	u.renderSecurity(w, r, ses, http.StatusOK, "", "", "")
}

func (u *UI) renderSecurity(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed, csr string) {
	u.renderSecurityView(w, r, ses, code, msg, failed, &securityView{CSR: csr})
}

func (u *UI) renderSecurityView(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed string, v *securityView) {
	v.Client = api.ClientAddr(r).String()
	if e := u.get(r, ses, "/api/v1/access", &v.Access); e != "" && failed == "" {
		failed = e
	}
	u.get(r, ses, "/api/v1/peer-key", &v.PeerKey) // absent without a data partition
	if e := u.get(r, ses, "/api/v1/certificates", &v.List); e != "" && failed == "" {
		failed = e
	}
	if e := u.get(r, ses, "/api/v1/tls", &v.TLS); e != "" && failed == "" {
		failed = e
	}
	for _, c := range v.Certificates {
		if !c.PendingCSR {
			v.Usable = append(v.Usable, c)
		}
	}
	for addr, id := range v.Assignments.ByAddress {
		v.Rows = append(v.Rows, assignRow{addr, id})
	}
	slices.SortFunc(v.Rows, func(a, b assignRow) int { return strings.Compare(a.Address, b.Address) })
	v.Rows = append(v.Rows, assignRow{}, assignRow{})
	var net networkView
	if u.get(r, ses, "/api/v1/network", &net) == "" {
		for _, l := range net.Status.Leases {
			v.Addresses = append(v.Addresses, l.Address.Addr().String())
		}
		for _, it := range net.Config.Interfaces {
			for _, a := range it.Addresses {
				if p, _, ok := strings.Cut(a.Address, "/"); ok && !slices.Contains(v.Addresses, p) {
					v.Addresses = append(v.Addresses, p)
				}
			}
		}
	}
	u.render(w, code, "security", page{Session: &ses, Security: v, Message: msg, Error: failed})
}

// securityAction is every form of the Security page but the export.
func (u *UI) securityAction(w http.ResponseWriter, r *http.Request, ses Session) {
	var a reply
	csr := ""
	switch do := r.PostFormValue("do"); do {
	case "self-signed", "csr":
		req := certs.Request{Name: r.PostFormValue("name"), CN: r.PostFormValue("cn"), SANs: fields(r.PostFormValue("sans")), Key: certs.KeyKind(r.PostFormValue("key"))}
		a = u.call(r, ses, http.MethodPost, "/api/v1/certificates/"+do, req)
		if a.OK() && do == "csr" {
			var ans certs.CSRAnswer
			if err := json.Unmarshal(a.Body, &ans); err == nil {
				csr = ans.CSR
				a.Sentence = "the key and the CSR for " + ans.Certificate.Subject + " were made: have your CA sign the CSR below, then import the certificate it returns"
			}
		} else if a.OK() {
			a.Sentence = "a self-signed certificate was made; assign it below to serve it"
		}
	case "import":
		in := certs.Import{Name: r.PostFormValue("name"), CertPEM: r.PostFormValue("cert_pem"), KeyPEM: r.PostFormValue("key_pem"), Passphrase: r.PostFormValue("passphrase")}
		if f, _, err := r.FormFile("pkcs12"); err == nil {
			b, err := io.ReadAll(io.LimitReader(f, 512<<10))
			f.Close()
			if err == nil && len(b) > 0 {
				in.PKCS12 = b
			}
		}
		a = u.call(r, ses, http.MethodPost, "/api/v1/certificates/import", in)
		if a.OK() {
			a.Sentence = "the certificate was imported; assign it below to serve it"
		}
	case "delete":
		a = u.call(r, ses, http.MethodDelete, "/api/v1/certificates/"+url.PathEscape(r.PostFormValue("id")), nil)
	case "assign":
		as := certs.Assignments{Default: r.PostFormValue("default"), ByAddress: map[string]string{}}
		for i := 0; i < 64; i++ {
			n := "addr" + strconv.Itoa(i)
			addr, id := strings.TrimSpace(r.PostFormValue(n)), r.PostFormValue(n+"_cert")
			if addr != "" && id != "" {
				as.ByAddress[addr] = id
			}
		}
		a = u.call(r, ses, http.MethodPut, "/api/v1/certificates/assignments", as)
		if a.OK() {
			a.Sentence = "the assignments were saved; new connections get them"
		}
	case "access":
		rules := access.Rules{Default: access.Action(r.PostFormValue("default_action")), Accept: fields(r.PostFormValue("accept")), Reject: fields(r.PostFormValue("reject"))}
		a = u.call(r, ses, http.MethodPut, "/api/v1/access", rules)
		if a.OK() {
			a.Sentence = "the allowed networks were saved"
		}
	case "peer-generate":
		a = u.call(r, ses, http.MethodPost, "/api/v1/peer-key/generate", nil)
		if a.OK() {
			var k peerkey.View
			json.Unmarshal(a.Body, &k)
			u.renderSecurityView(w, r, ses, http.StatusOK, "a new inter-appliance key was made: copy it now into the other appliance; it is not shown again", "", &securityView{NewKey: k.Key})
			return
		}
	case "peer-set":
		a = u.call(r, ses, http.MethodPut, "/api/v1/peer-key", map[string]string{"key": r.PostFormValue("peer_key")})
		if a.OK() {
			a.Sentence = "the inter-appliance key was saved; compare its fingerprint with the other appliance's"
		}
	case "tls":
		t := certs.TLSSettings{MinVersion: r.PostFormValue("min_version"), CipherSuites: r.PostForm["suite"]}
		a = u.call(r, ses, http.MethodPut, "/api/v1/tls", t)
		if a.OK() {
			a.Sentence = "the TLS settings were saved; new connections get them"
		}
	default:
		u.renderSecurity(w, r, ses, http.StatusBadRequest, "", "choose an action on the Security page", "")
		return
	}
	if !a.OK() {
		u.renderSecurity(w, r, ses, a.Code, "", a.Sentence, "")
		return
	}
	u.renderSecurity(w, r, ses, http.StatusOK, a.Sentence, "", csr)
}

// securityExport sends the exported file, or the page with the API's
// sentence.
func (u *UI) securityExport(w http.ResponseWriter, r *http.Request, ses Session) {
	id := r.PostFormValue("id")
	ex := certs.Export{Format: r.PostFormValue("format"), Passphrase: r.PostFormValue("passphrase"), IncludeKey: r.PostFormValue("include_key") == "1"}
	a := u.call(r, ses, http.MethodPost, "/api/v1/certificates/"+url.PathEscape(id)+"/export", ex)
	if !a.OK() {
		u.renderSecurity(w, r, ses, a.Code, "", a.Sentence, "")
		return
	}
	name, ct := id+".pem", "application/x-pem-file"
	if ex.Format == certs.FormatPKCS12 {
		name, ct = id+".p12", "application/x-pkcs12"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	w.Write(a.Body)
}

// securityCSR downloads a waiting CSR.
func (u *UI) securityCSR(w http.ResponseWriter, r *http.Request, ses Session) {
	id := r.URL.Query().Get("id")
	a := u.call(r, ses, http.MethodGet, "/api/v1/certificates/"+url.PathEscape(id)+"/csr", nil)
	if !a.OK() {
		u.renderSecurity(w, r, ses, a.Code, "", a.Sentence, "")
		return
	}
	w.Header().Set("Content-Type", "application/pkcs10")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.csr"`)
	w.Write(a.Body)
}
