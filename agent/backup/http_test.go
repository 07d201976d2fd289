package backup

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A backup kept on the box restores without an upload, with the
// automatic backups' password unless another is given.
func TestRestoreFromAKeptBackup(t *testing.T) {
	root, sections := box(t)
	s := &Service{
		Sections: func(bool) []Section { return sections },
		Key:      key(t),
		Meta:     func() (string, string, *App) { return "KEEL-1", "1.0.0", &App{"demo", "1.0.0"} },
		Dir:      filepath.Join(root, "keel/backup"),
		StageDir: filepath.Join(root, "keel/restore"),
	}
	if _, err := s.SaveSettings(Settings{Password: "kept-pass-1", Keep: 3}); err != nil {
		t.Fatal(err)
	}
	kept, err := s.Auto("test")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "keel/network.json"), []byte(`{"hostname":"changed"}`), 0o600)
	mux := http.NewServeMux()
	s.Routes(mux)
	post := func(query, password string) (int, string) {
		r := httptest.NewRequest("POST", "/api/v1/restore?"+query, nil)
		if password != "" {
			r.Header.Set(PasswordHeader, password)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}

	code, body := post("backup="+kept.Name+"&dry_run=1", "")
	if code != http.StatusOK {
		t.Fatalf("dry run: %d %s", code, body)
	}
	var plan Plan
	json.Unmarshal([]byte(body), &plan)
	what := map[string]string{}
	for _, c := range plan.Changes {
		what[c.Section] = c.What
	}
	if what["network"] != "changed" || !plan.ThisBox || plan.Manifest.Reason != "test" {
		t.Fatalf("plan %s", body)
	}
	if code, body := post("backup=nope.age", ""); code != http.StatusNotFound || !strings.Contains(body, "GET /api/v1/backups") {
		t.Fatalf("unknown backup: %d %s", code, body)
	}
	if code, body := post("backup="+kept.Name, "wrong-password"); code != http.StatusBadRequest {
		t.Fatalf("wrong password: %d %s", code, body)
	}
	if j, _ := LoadJournal(s.StageDir); j != nil {
		t.Fatal("a refused restore left a journal")
	}
	if code, body := post("backup="+kept.Name, ""); code != http.StatusAccepted {
		t.Fatalf("restore: %d %s", code, body)
	}
	j, err := LoadJournal(s.StageDir)
	if err != nil || j == nil || j.State != StateStaged || len(j.Targets) == 0 || j.Targets[0].Section != "network" {
		t.Fatalf("journal %+v %v", j, err)
	}
}

// compare reads the manifest, not the staged copy, and the box's files
// only as far as it must.
func TestCompareAgainstTheManifest(t *testing.T) {
	root, sections := box(t)
	os.RemoveAll(filepath.Join(root, "apps/demo/files")) // no store limits in play
	_, m := write(t, sections, key(t), false)
	var app SectionFiles
	for _, s := range m.Sections {
		if s.Name == "app-data" {
			app = s
		}
	}
	local := sections[2]
	if got := compare(app, local); got != "unchanged" {
		t.Fatalf("the same folder: %s", got)
	}
	os.WriteFile(filepath.Join(root, "apps/demo/history/rec-2"), []byte("new"), 0o600)
	if got := compare(app, local); got != "unchanged" {
		t.Fatalf("a new history file (a section of its own) changed the app data: %s", got)
	}
	os.WriteFile(filepath.Join(root, "apps/demo/counter"), []byte("42"), 0o600) // same size
	if got := compare(app, local); got != "changed" {
		t.Fatalf("a changed file of the same size: %s", got)
	}
	os.WriteFile(filepath.Join(root, "apps/demo/counter"), []byte("41"), 0o600)
	os.WriteFile(filepath.Join(root, "apps/demo/extra"), []byte("x"), 0o600)
	if got := compare(app, local); got != "changed" {
		t.Fatalf("an extra file: %s", got)
	}
	os.RemoveAll(filepath.Join(root, "apps/demo"))
	if got := compare(app, local); got != "added" {
		t.Fatalf("no folder: %s", got)
	}
}
