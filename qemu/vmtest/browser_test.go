package vmtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"keel.dev/keel/agent/certs"
	"keel.dev/keel/agent/webui"
	"keel.dev/keel/qemu"
)

// screenshotDir is where the browser tests leave a picture of each page,
// for a person to look at.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("KEEL_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "keel-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browserFor starts headless Debian chromium, which trusts nothing about
// the box but is told to accept its self-signed certificate.
func browserFor(t *testing.T) context.Context {
	t.Helper()
	path := ""
	for _, p := range []string{"chromium", "chromium-browser"} {
		if q, err := exec.LookPath(p); err == nil {
			path = q
			break
		}
	}
	if path == "" {
		t.Fatal("chromium is not installed (image/deps.sh installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel3)
	return ctx
}

// browser is one headless chromium on a box's web interface.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string // https://127.0.0.1:PORT/appliance
	shots string
}

func newBrowser(t *testing.T, vm *qemu.VM) *browser {
	return &browser{t: t, ctx: browserFor(t), base: fmt.Sprintf("https://127.0.0.1:%d%s", vm.HTTPSPort(), webui.Prefix), shots: screenshotDir(t)}
}

func (b *browser) step(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("browser: read %s: %v", sel, err)
	}
	return v
}

func (b *browser) shot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// login logs in as admin with password, which must not need changing.
func (b *browser) login(password string) {
	b.t.Helper()
	b.step("log in", chromedp.Navigate(b.base+"/login"), chromedp.WaitVisible(chromedp.CSS("#password")),
		chromedp.SendKeys(chromedp.CSS("#password"), password), chromedp.Submit(chromedp.CSS("#password")),
		chromedp.WaitVisible(chromedp.CSS("#version")))
}

// signCSR signs a CSR in PEM with a new test CA, as a company CA would.
func signCSR(t *testing.T, csrPEM string) (leaf, caPEM string, ca *x509.Certificate) {
	t.Helper()
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"}, NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(5, 0, 0), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	ca, _ = x509.ParseCertificate(der)
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil {
		t.Fatalf("no CSR on the page: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("the CSR: %v", err)
	}
	lt := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: csr.Subject, DNSNames: csr.DNSNames, IPAddresses: csr.IPAddresses, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if der, err = x509.CreateCertificate(rand.Reader, lt, ca, csr.PublicKey, caKey); err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})), ca
}

// checkBrowserFirstLogin is an operator's first visit in a real browser:
// log in with the first-boot password the console printed, meet the forced
// change, choose TestPassword, read the Status page, log out. It returns
// false when the image has a preseeded password (nothing to change).
func checkBrowserFirstLogin(t *testing.T, vm *qemu.VM) bool {
	t.Helper()
	first := FirstPassword(vm)
	if first == "" {
		t.Log("the image has a preseeded password; the browser's first login is not checked")
		return false
	}
	br := newBrowser(t, vm)
	ctx, base, step, text, shot := br.ctx, br.base, br.step, br.text, br.shot
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	shots := br.shots
	step("open the login page", chromedp.Navigate(base), chromedp.WaitVisible(css("#password")))
	shot("login")
	step("log in with the first-boot password",
		chromedp.SendKeys(css("#password"), first), chromedp.Submit(css("#password")),
		chromedp.WaitVisible(css("#new")))
	forced := text("main")
	shot("password-forced")
	step("choose a password",
		chromedp.SendKeys(css("#current"), first), chromedp.SendKeys(css("#new"), TestPassword),
		chromedp.SendKeys(css("#again"), TestPassword), chromedp.Submit(css("#again")),
		chromedp.WaitVisible(css(".message")))
	step("open Status", chromedp.Navigate(base+"/status"), chromedp.WaitVisible(css("#version")))
	status, version, slot := text("main"), text("#version"), text("#slot")
	shot("status")
	// Readable at phone width: nothing wider than the screen.
	step("Status at phone width", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(base+"/status"), chromedp.WaitVisible(css("#version")))
	phoneWidth, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.documentElement.scrollWidth`))
	if err != nil {
		t.Fatal(err)
	}
	shot("status-phone")
	step("back to 1280x800", chromedp.EmulateReset(), chromedp.EmulateViewport(1280, 800))
	if phoneWidth > 400 {
		t.Errorf("at 390 px wide the Status page is %v px wide", phoneWidth)
	}
	step("ask to reboot", chromedp.Navigate(base+"/power?action=reboot"), chromedp.WaitVisible(css("button.danger")))
	shot("power-confirm")

	step("add an account on Users",
		chromedp.Navigate(base+"/users"), chromedp.WaitVisible(css("#add-name")),
		chromedp.SendKeys(css("#add-name"), "ops"), chromedp.SendKeys(css("#add-password"), "ops-first-pass"),
		chromedp.SendKeys(css("#add-again"), "ops-first-pass"), chromedp.Click(css("#add-user button")),
		chromedp.WaitVisible(css(".message")))
	usersMsg, usersTable := text(".message"), text("#users")
	shot("users")
	step("open Networking", chromedp.Navigate(base+"/network"), chromedp.WaitVisible(css("#hostname")))
	shot("network")
	step("change the host name",
		chromedp.SetValue(css("#hostname"), "keel-browser"), chromedp.Click(css("#network button")),
		chromedp.WaitVisible(css(".message")))
	netMsg := text(".message")
	step("see it on Status", chromedp.Navigate(base+"/status"), chromedp.WaitVisible(css("#hostname")))
	host := text("#hostname")
	step("open the audit log", chromedp.Navigate(base+"/audit"), chromedp.WaitVisible(css("#audit")))
	auditText := text("#audit")
	shot("audit")

	// Security: a CSR made on the box, signed by the company's CA,
	// imported, assigned to the box's address, and served there.
	step("create a CSR",
		chromedp.Navigate(base+"/security"), chromedp.WaitVisible(css("#cn")),
		chromedp.SendKeys(css("#cn"), "keel-browser"), chromedp.SendKeys(css("#sans"), "keel-browser 10.0.2.15"),
		chromedp.SetValue(css("#keykind"), "rsa-2048"), chromedp.Click(css("#make-csr")),
		chromedp.WaitVisible(css("#csr-text")))
	csr, err := chromedp.Run(ctx, chromedp.Value(css("#csr-text")))
	if err != nil {
		t.Fatal(err)
	}
	shot("security-csr")
	leaf, caPEM, ca := signCSR(t, csr)
	// Each form starts from a fresh page, so that the message waited for
	// is the new one.
	step("import the signed certificate",
		chromedp.Navigate(base+"/security"), chromedp.WaitVisible(css("#cert_pem")),
		chromedp.SetValue(css("#cert_pem"), leaf+caPEM), chromedp.Click(css("#import button")),
		chromedp.WaitVisible(css(".message")))
	importMsg := text(".message")
	var list certs.List
	if code, body := API(t, vm, "GET", "/api/v1/certificates", TestPassword); code != 200 || json.Unmarshal(body, &list) != nil {
		t.Fatalf("certificates: %d %s", code, body)
	}
	signed := list.Certificates[len(list.Certificates)-1]
	step("assign it to the box's address",
		chromedp.Navigate(base+"/security"), chromedp.WaitVisible(css("#addr0")),
		chromedp.SetValue(css("#addr0"), "10.0.2.15"), chromedp.SetValue(css("#addr0_cert"), signed.ID),
		chromedp.Click(css("#assign button")), chromedp.WaitVisible(css(".message")))
	assignMsg := text(".message")
	shot("security")
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", vm.HTTPSPort()), &tls.Config{RootCAs: pool, ServerName: "keel-browser"})
	if err != nil {
		t.Errorf("the box does not serve the imported certificate on 10.0.2.15 (%q, %q): %v", importMsg, assignMsg, err)
	} else {
		conn.Close()
	}
	code, p12 := APIBody(t, vm, "POST", "/api/v1/certificates/"+signed.ID+"/export", TestPassword, `{"format":"pkcs12","passphrase":"export-pass-1"}`)
	if code != 200 {
		t.Errorf("export: %d %s", code, p12)
	} else {
		f := filepath.Join(t.TempDir(), "box.p12")
		os.WriteFile(f, p12, 0o600)
		out, err := exec.Command("openssl", "pkcs12", "-in", f, "-passin", "pass:export-pass-1", "-nodes").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "CN = keel-browser") || !strings.Contains(string(out), "PRIVATE KEY") {
			t.Errorf("openssl pkcs12 on the export: %v\n%s", err, out)
		}
	}
	// Back to the appliance's own certificate for the tests that follow.
	if code, body := APIBody(t, vm, "PUT", "/api/v1/certificates/assignments", TestPassword, `{"default":"appliance","by_address":{}}`); code != 200 {
		t.Errorf("unassign: %d %s", code, body)
	}
	if !strings.Contains(usersMsg, "the user ops was added") || !strings.Contains(usersTable, "ops") || !strings.Contains(usersTable, "admin (you)") {
		t.Errorf("Users after adding ops: %q / %q", usersMsg, usersTable)
	}
	if host != "keel-browser" {
		t.Errorf("Status shows host name %q after Networking set keel-browser (%q)", host, netMsg)
	}
	for _, want := range []string{"login (web)", "POST /api/v1/users/admin/password", "POST /api/v1/users", "PUT /api/v1/network"} {
		if !strings.Contains(auditText, want) {
			t.Errorf("the audit log lacks %q:\n%s", want, auditText)
		}
	}
	step("log out",
		chromedp.Navigate(base+"/status"), chromedp.WaitVisible(css(".logout button")),
		chromedp.Click(css(".logout button")), chromedp.WaitVisible(css("#password")),
		chromedp.Navigate(base+"/status"), chromedp.WaitVisible(css("#password")))
	afterLogout, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(forced, "first-boot password") {
		t.Errorf("the first login did not ask for a new password: %q", forced)
	}
	st := GetStatus(t, vm, TestPassword)
	if version != st.Base.Version || !strings.Contains(slot, "base slot "+st.Base.Slot) {
		t.Errorf("the Status page shows version %q slot %q; the API says %s slot %s", version, slot, st.Base.Version, st.Base.Slot)
	}
	if host != st.Hostname {
		t.Errorf("the Status page shows host name %q, the API %q", host, st.Hostname)
	}
	for _, want := range []string{st.Serial, st.Certificate.SHA256} {
		if !strings.Contains(status, want) {
			t.Errorf("the Status page lacks %q", want)
		}
	}
	if !strings.HasSuffix(afterLogout, webui.Prefix+"/login") {
		t.Errorf("after logout the Status page went to %q, want the login", afterLogout)
	}
	t.Logf("screenshots in %s", shots)
	return true
}
