package webui

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// restoreForm posts the Restore form as a browser does: fields first,
// the file last.
func (br *browser) restoreForm(file []byte, fields map[string]string) answer {
	br.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("csrf", br.token())
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	fw, _ := mw.CreateFormFile("file", "backup.age")
	fw.Write(file)
	mw.Close()
	req, _ := http.NewRequest("POST", br.b.srv.URL+Prefix+"/backup/restore", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Origin", br.b.srv.URL)
	req.AddCookie(&http.Cookie{Name: CookieName, Value: br.cookie})
	res, err := br.b.srv.Client().Do(req)
	if err != nil {
		br.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{code: res.StatusCode, body: string(b), header: res.Header}
}

func TestBackupPageDownloadsAndDryRunsARestore(t *testing.T) {
	b := newBox(t, false)
	br := b.browser(t)
	br.login(firstPassword)
	a := br.form(Prefix+"/backup/download", url.Values{"password": {"short"}})
	if a.code != http.StatusBadRequest || !strings.Contains(a.body, "a backup needs a password") {
		t.Fatalf("a short password: %d", a.code)
	}
	a = br.form(Prefix+"/backup/download", url.Values{"password": {"backup-pass-1"}})
	if a.code != http.StatusOK || a.header.Get("Content-Type") != "application/octet-stream" || !strings.HasPrefix(a.body, "age-encryption.org/v1") {
		t.Fatalf("download: %d %s %.40q", a.code, a.header.Get("Content-Type"), a.body)
	}
	file := []byte(a.body)
	if a := br.form(Prefix+"/backup", url.Values{"do": {"keep-now"}}); a.code != http.StatusConflict || !strings.Contains(a.body, "set the automatic backups") {
		t.Fatalf("kept backup without a password: %d", a.code)
	}
	br.form(Prefix+"/backup", url.Values{"password": {"auto-pass-1"}, "keep": {"2"}})
	for range 3 {
		if a := br.form(Prefix+"/backup", url.Values{"do": {"keep-now"}}); a.code != http.StatusOK {
			t.Fatalf("kept backup: %d %s", a.code, a.body)
		}
	}
	if got := b.backups.List(); len(got) != 2 || !strings.HasPrefix(got[0].Reason, "taken by admin") {
		t.Fatalf("kept backups (keep 2): %+v", got)
	}
	r := br.restoreForm(file, map[string]string{"password": "wrong-pass"})
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, "the password does not open this backup") {
		t.Fatalf("wrong password: %d %s", r.code, r.body)
	}
	r = br.restoreForm(file, map[string]string{"password": "backup-pass-1"})
	if r.code != http.StatusOK || !strings.Contains(r.body, "nothing was changed") || !strings.Contains(r.body, "<td>network</td><td>unchanged</td>") || !strings.Contains(r.body, "(this appliance)") {
		t.Fatalf("dry run: %d %s", r.code, r.body)
	}
	if strings.Contains(r.body, `id="restore-kept"`) {
		t.Fatal("an uploaded file's dry run offers to restore a kept backup")
	}
	// A kept backup: checked first, and only then offered for restore.
	kept := b.backups.List()[0].Name
	a = br.form(Prefix+"/backup/restore-kept", url.Values{"name": {kept}})
	if a.code != http.StatusOK || !strings.Contains(a.body, "nothing was changed") || !strings.Contains(a.body, `id="restore-kept"`) || !strings.Contains(a.body, `value="`+kept+`"`) {
		t.Fatalf("check of a kept backup: %d %s", a.code, a.body)
	}
	if a := br.form(Prefix+"/backup/restore-kept", url.Values{"name": {"gone.age"}}); a.code != http.StatusNotFound || !strings.Contains(a.body, "GET /api/v1/backups") {
		t.Fatalf("an unknown kept backup: %d %s", a.code, a.body)
	}
}
