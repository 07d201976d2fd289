package webui

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"keel.dev/keel/agent/backup"
)

// backupView is the Backup page.
type backupView struct {
	Settings backup.Settings
	Stored   []backup.Stored
	Plan     *backup.Plan // a restore's dry run or answer
	Applied  bool         // the restore was staged: the box restarts
	Kept     string       // the plan is of this backup kept on the box
	Serial   string
}

func (u *UI) backupPage(w http.ResponseWriter, r *http.Request, ses Session) {
	u.renderBackup(w, r, ses, http.StatusOK, "", "", &backupView{})
}

func (u *UI) renderBackup(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed string, v *backupView) {
	if e := u.get(r, ses, "/api/v1/backup/settings", &v.Settings); e != "" && failed == "" {
		failed = e
	}
	var list struct {
		Backups []backup.Stored `json:"backups"`
	}
	u.get(r, ses, "/api/v1/backups", &list)
	v.Stored = list.Backups
	u.render(w, code, "backup", page{Session: &ses, Backup: v, Message: msg, Error: failed})
}

// backupAction saves the automatic backups' settings, or takes one now.
func (u *UI) backupAction(w http.ResponseWriter, r *http.Request, ses Session) {
	if r.PostFormValue("do") == "keep-now" {
		a := u.call(r, ses, http.MethodPost, "/api/v1/backups", nil)
		if !a.OK() {
			u.renderBackup(w, r, ses, a.Code, "", a.Sentence, &backupView{})
			return
		}
		u.renderBackup(w, r, ses, http.StatusOK, "a backup was taken and kept on the appliance", "", &backupView{})
		return
	}
	keep, _ := strconv.Atoi(r.PostFormValue("keep"))
	a := u.call(r, ses, http.MethodPut, "/api/v1/backup/settings", backup.Settings{
		Password: r.PostFormValue("password"), Keep: keep, Daily: r.PostFormValue("daily") == "1", IncludeHistory: r.PostFormValue("include_history") == "1"})
	if !a.OK() {
		u.renderBackup(w, r, ses, a.Code, "", a.Sentence, &backupView{})
		return
	}
	u.renderBackup(w, r, ses, http.StatusOK, "the automatic backups' settings were saved", "", &backupView{})
}

// backupDownload streams a new backup, or a kept one, to the browser as
// the API writes it; a refusal comes back as the page with its sentence.
func (u *UI) backupDownload(w http.ResponseWriter, r *http.Request, ses Session) {
	var req *http.Request
	if name := r.PostFormValue("name"); name != "" {
		req, _ = http.NewRequest(http.MethodGet, "/api/v1/backups/"+url.PathEscape(name), nil)
	} else {
		body, _ := json.Marshal(backup.Request{Password: r.PostFormValue("password"), IncludeHistory: r.PostFormValue("include_history") == "1"})
		req, _ = http.NewRequest(http.MethodPost, "/api/v1/backup", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
	}
	u.stream(w, r, ses, req, func(code int, sentence string) {
		u.renderBackup(w, r, ses, code, "", sentence, &backupView{})
	})
}

// backupRestore streams an uploaded backup to POST /api/v1/restore: the
// form is multipart with its fields first and the file last.
func (u *UI) backupRestore(w http.ResponseWriter, r *http.Request, ses Session) {
	fields, p, ok := u.streamedForm(w, r, ses, "file", func(msg string) {
		u.renderBackup(w, r, ses, http.StatusBadRequest, "", msg, &backupView{})
	})
	if !ok {
		return
	}
	q := url.Values{}
	dry := fields["apply"] != "1"
	if dry {
		q.Set("dry_run", "1")
	}
	if fields["carry_identity"] == "1" {
		q.Set("carry_identity", "1")
	}
	req, _ := http.NewRequest(http.MethodPost, "/api/v1/restore?"+q.Encode(), p)
	req.Header.Set(backup.PasswordHeader, fields["password"])
	req.Header.Set("Content-Type", "application/octet-stream")
	var rec captured
	u.cfg.Do(&rec, r, ses.User, req)
	u.restoreAnswer(w, r, ses, rec.reply(), dry, "")
}

// backupRestoreKept restores, or checks, a backup kept on the box.
func (u *UI) backupRestoreKept(w http.ResponseWriter, r *http.Request, ses Session) {
	q := url.Values{"backup": {r.PostFormValue("name")}}
	dry := r.PostFormValue("apply") != "1"
	if dry {
		q.Set("dry_run", "1")
	}
	u.restoreAnswer(w, r, ses, u.call(r, ses, http.MethodPost, "/api/v1/restore?"+q.Encode(), nil), dry, r.PostFormValue("name"))
}

// restoreAnswer shows a restore's plan, or its refusal.
func (u *UI) restoreAnswer(w http.ResponseWriter, r *http.Request, ses Session, a reply, dry bool, kept string) {
	if !a.OK() {
		u.renderBackup(w, r, ses, a.Code, "", a.Sentence, &backupView{})
		return
	}
	v := &backupView{Plan: &backup.Plan{}, Applied: !dry, Kept: kept}
	json.Unmarshal(a.Body, v.Plan)
	msg := "the backup was checked: nothing was changed; below is what a restore would change"
	if !dry {
		msg = "the backup was checked and staged: the appliance restarts now to put it in place"
	}
	u.renderBackup(w, r, ses, a.Code, msg, "", v)
}

// resetAction asks for a factory reset (from the Status page).
func (u *UI) resetAction(w http.ResponseWriter, r *http.Request, ses Session) {
	a := u.call(r, ses, http.MethodPost, "/api/v1/factory-reset", map[string]string{"mode": r.PostFormValue("mode"), "then": r.PostFormValue("then"), "confirm": r.PostFormValue("confirm")})
	if !a.OK() {
		u.render(w, a.Code, "error", page{Session: &ses, Error: a.Sentence})
		return
	}
	u.render(w, a.Code, "power", page{Session: &ses, Message: a.Sentence, Power: &powerView{Action: "reset", Verb: "Factory reset", Done: true}})
}
