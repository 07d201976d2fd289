package webui

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var (
	controlRE = regexp.MustCompile(`<(input|select|textarea)\b[^>]*>`)
	idRE      = regexp.MustCompile(`\bid="([^"]+)"`)
	typeRE    = regexp.MustCompile(`\btype="([^"]+)"`)
)

// Every form control on every page has a label (WCAG 1.3.1; the issue's
// rule), found by the label's for= and the control's id.
func TestEveryFormControlHasALabel(t *testing.T) {
	b := newBox(t, false)
	if err := b.users.Add("ops", "ops-first-pass"); err != nil {
		t.Fatal(err)
	}
	br := b.browser(t)
	if a := br.do("GET", Prefix+"/login", nil); a.code != 200 {
		t.Fatal(a.code)
	}
	pages := map[string]string{"login": br.do("GET", Prefix+"/login", nil).body}
	br.login(firstPassword)
	for _, p := range []string{"status", "users", "network", "security", "support", "audit", "password", "power?action=reboot", "backup", "failover"} {
		pages[p] = br.do("GET", Prefix+"/"+p, nil).body
	}
	// A page with a CSR and a download-key box, which add controls.
	pages["security+csr"] = br.form(Prefix+"/security", url.Values{"do": {"csr"}, "cn": {"box"}}).body
	checked := 0
	for name, body := range pages {
		if !strings.Contains(body, "</html>") {
			t.Errorf("%s: not a whole page", name)
			continue
		}
		for _, c := range controlRE.FindAllString(body, -1) {
			if m := typeRE.FindStringSubmatch(c); m != nil && (m[1] == "hidden" || m[1] == "submit") {
				continue
			}
			id := idRE.FindStringSubmatch(c)
			if id == nil {
				t.Errorf("%s: %s has no id, so no label can name it", name, c)
				continue
			}
			checked++
			if !strings.Contains(body, `<label for="`+id[1]+`"`) {
				t.Errorf("%s: %s has no label", name, c)
			}
		}
	}
	if checked < 40 {
		t.Fatalf("only %d controls found on the pages", checked)
	}
}
