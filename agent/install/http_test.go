package install

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
)

func serve(t *testing.T, e *env) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	e.in.Routes(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func call(t *testing.T, ts *httptest.Server, method, path string, body io.Reader, into any) int {
	t.Helper()
	req, err := http.NewRequest(method, ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: content type %q", method, path, ct)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode
}

type answer struct {
	Job     string `json:"job"`
	Message string `json:"message"`
	Error   string `json:"error"`
}

func TestHTTPInstallThenReboot(t *testing.T) {
	e := newEnv(t)
	ts := serve(t, e)
	data := payload(1<<20, 8)
	var a answer
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(build(t, manifest("1.2.0"), data, vendorKey)), &a); code != http.StatusAccepted || a.Job == "" || a.Error != "" {
		t.Fatalf("%d %+v", code, a)
	}
	var s api.Job
	if code := call(t, ts, "GET", "/api/v1/jobs/"+a.Job, nil, &s); code != http.StatusOK || s.State != Done || s.Progress != 1 || s.Version != "1.2.0" || s.Kind != "install" {
		t.Errorf("%d %+v", code, s)
	}
	// The reboot follows the answer.
	deadline := time.Now().Add(5 * time.Second)
	for e.reboots.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := e.reboots.Load(); n != 1 {
		t.Fatalf("Reboot called %d times", n)
	}
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(build(t, manifest("1.3.0"), data, vendorKey)), &a); code != http.StatusConflict || !strings.Contains(a.Error, "about to reboot") {
		t.Errorf("install while rebooting: %d %+v", code, a)
	}
}

func TestHTTPRefusalsAndAllowDowngrade(t *testing.T) {
	e := newEnv(t)
	ts := serve(t, e)
	same := build(t, manifest("1.1.0"), payload(5000, 9), vendorKey)
	var a answer
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(same), &a); code != http.StatusConflict || a.Error != "1.1.0 is already installed; use allow_downgrade to reinstall" || a.Job != "" {
		t.Errorf("same version: %d %+v", code, a)
	}
	if code := call(t, ts, "POST", "/api/v1/install?allow_downgrade=maybe", bytes.NewReader(same), &a); code != http.StatusBadRequest || a.Error != "allow_downgrade must be 1 or 0" {
		t.Errorf("bad allow_downgrade: %d %+v", code, a)
	}
	// force said too little about what it forced; it is refused by name.
	if code := call(t, ts, "POST", "/api/v1/install?force=1", bytes.NewReader(same), &a); code != http.StatusBadRequest || !strings.HasPrefix(a.Error, "force is gone") || !strings.Contains(a.Error, "allow_downgrade=1") {
		t.Errorf("force: %d %+v", code, a)
	}
	if code := call(t, ts, "POST", "/api/v1/install?reboot=soon", bytes.NewReader(same), &a); code != http.StatusBadRequest {
		t.Errorf("bad reboot: %d %+v", code, a)
	}
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(build(t, manifest("1.2.0"), payload(5000, 9), otherKey)), &a); code != http.StatusForbidden || !strings.Contains(a.Error, "unknown key") {
		t.Errorf("unknown key: %d %+v", code, a)
	}
	// A payload damaged in transit: the job exists and failed.
	bad := build(t, manifest("1.2.0"), payload(5000, 9), vendorKey)
	bad[payloadOffset(t, bad)+10] ^= 1
	if code := call(t, ts, "POST", "/api/v1/install", bytes.NewReader(bad), &a); code != http.StatusBadRequest || a.Job == "" || !strings.Contains(a.Error, "payload does not match") {
		t.Errorf("damaged payload: %d %+v", code, a)
	}
	var s api.Job
	if code := call(t, ts, "GET", "/api/v1/jobs/"+a.Job, nil, &s); code != http.StatusOK || s.State != Failed || s.Message != a.Error {
		t.Errorf("failed job: %d %+v", code, s)
	}
	if code := call(t, ts, "POST", "/api/v1/install?allow_downgrade=1&reboot=later", bytes.NewReader(same), &a); code != http.StatusAccepted || !strings.Contains(a.Message, "boots on the next reboot") {
		t.Errorf("forced: %d %+v", code, a)
	}
	if e.reboots.Load() != 0 {
		t.Error("rebooted although asked to reboot later")
	}
	if code := call(t, ts, "GET", "/api/v1/jobs/0123456789abcdef", nil, &a); code != http.StatusNotFound || !strings.Contains(a.Error, "there is no job") {
		t.Errorf("unknown job: %d %+v", code, a)
	}
}

// A client polling the job list during a long upload sees the install's
// progress before the answer comes.
func TestHTTPProgressDuringUpload(t *testing.T) {
	e := newEnv(t)
	ts := serve(t, e)
	pkg := build(t, manifest("1.2.0"), payload(4<<20, 10), vendorKey)
	pr, pw := io.Pipe()
	done := make(chan answer, 1)
	go func() {
		var a answer
		req, _ := http.NewRequest("POST", ts.URL+"/api/v1/install?reboot=later", pr)
		resp, err := ts.Client().Do(req)
		if err == nil {
			json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
		} else {
			a.Error = err.Error()
		}
		done <- a
	}()
	half := payloadOffset(t, pkg) + 2<<20
	if _, err := pw.Write(pkg[:half]); err != nil {
		t.Fatal(err)
	}
	var seen api.Job
	deadline := time.Now().Add(5 * time.Second)
	for seen.ID == "" && time.Now().Before(deadline) {
		var list struct{ Jobs []api.Job }
		call(t, ts, "GET", "/api/v1/jobs", nil, &list)
		if len(list.Jobs) > 0 && list.Jobs[0].State == Running && list.Jobs[0].Progress > 0 {
			seen = list.Jobs[0]
		}
		time.Sleep(2 * time.Millisecond)
	}
	if seen.ID == "" || seen.Progress >= 0.5 || seen.Version != "1.2.0" {
		t.Fatalf("no progress seen during the upload: %+v", seen)
	}
	if _, err := pw.Write(pkg[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if a := <-done; a.Job != seen.ID || a.Error != "" {
		t.Errorf("answer %+v, polled job %s", a, seen.ID)
	}
}

// The upload test reads the whole upload, keeps nothing and says how many
// bytes came; no job starts and no slot changes.
func TestHTTPUploadTest(t *testing.T) {
	e := newEnv(t)
	ts := serve(t, e)
	var res api.UploadTest
	if code := call(t, ts, "POST", "/api/v1/install/upload-test", bytes.NewReader(payload(3<<20, 1)), &res); code != http.StatusOK {
		t.Fatalf("%d %+v", code, res)
	}
	if res.Bytes != 3<<20 || res.Seconds <= 0 || res.MiBPerS <= 0 {
		t.Errorf("answer %+v, want 3 MiB with a time and a rate", res)
	}
	var jobs api.Jobs
	if call(t, ts, "GET", "/api/v1/jobs", nil, &jobs); len(jobs.Jobs) != 0 {
		t.Errorf("jobs after an upload test: %+v", jobs.Jobs)
	}
}
