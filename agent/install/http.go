package install

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"keel.dev/keel/image/bundle"
	"keel.dev/keel/image/kpkg"

	"keel.dev/keel/agent/api"
)

// Routes registers the install and job endpoints (see the package
// documentation for their semantics).
func (in *Installer) Routes(mux api.Mux) {
	mux.Handle("POST /api/v1/install", http.HandlerFunc(in.serveInstall))
	mux.Handle("POST /api/v1/install/upload-test", http.HandlerFunc(in.serveUploadTest))
	mux.Handle("GET /api/v1/jobs", http.HandlerFunc(in.serveJobs))
	mux.Handle("GET /api/v1/jobs/{id}", http.HandlerFunc(in.serveJob))
}

func (in *Installer) serveInstall(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := Options{Size: r.ContentLength}
	bad := func(msg string) { in.refuse(w, r, !api.ExpectsContinue(r), http.StatusBadRequest, msg, "") }
	if q.Has("force") {
		bad("force is gone: it said too little about what it forced; use allow_downgrade=1 to install the same or an older version (nothing overwrites the only committed base slot during a trial boot)")
		return
	}
	switch q.Get("allow_downgrade") {
	case "", "0", "false":
	case "1", "true":
		opts.AllowDowngrade = true
	default:
		bad("allow_downgrade must be 1 or 0")
		return
	}
	switch q.Get("reboot") {
	case "", "now":
	case "later":
		opts.RebootLater = true
	default:
		bad("reboot must be now or later")
		return
	}
	// The request's context ends once the handler has returned and the
	// answer is flushed: the operator hears the outcome before the box goes.
	opts.RebootAfter = r.Context().Done()
	// What can be refused without the package is refused before its first
	// byte is read: a client that sent "Expect: 100-continue" then never
	// sends the payload.
	if err := in.Ready(); err != nil {
		in.refuse(w, r, !api.ExpectsContinue(r), HTTPStatus(err), err.Error(), "")
		return
	}

	// A bundle starts with bundle.json, a package with manifest.json.
	body := bufio.NewReader(r.Body)
	start := in.Start
	if head, _ := body.Peek(512); bundle.IsBundle(head) {
		start = in.StartBundle
	}
	j, err := start(r.Context(), body, opts)
	if err != nil {
		id := ""
		if j != nil {
			id = j.ID()
		}
		in.refuse(w, r, true, HTTPStatus(err), err.Error(), id)
		return
	}
	// A package ends before its archive does (two zero blocks), and a
	// client may pad: read to the end so the answer is not cut off.
	in.discard(w, r)
	s := j.Status()
	writeJSON(w, http.StatusAccepted, api.Accepted{Job: s.ID, Message: s.Message})
	if err := http.NewResponseController(w).Flush(); err != nil {
		in.log().Debug("flush install answer", "err", err)
	}
}

// serveUploadTest reads an upload the way an install does (the same
// server, TLS and buffered reader) and throws it away: what the box can
// receive, with no hashing, unpacking or writing behind it.
func (in *Installer) serveUploadTest(w http.ResponseWriter, r *http.Request) {
	body := bufio.NewReader(r.Body)
	if _, err := body.Peek(1); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "the upload was cut off: "+err.Error(), "")
		return
	}
	start := time.Now()
	n, err := io.Copy(io.Discard, body)
	took := time.Since(start).Seconds()
	if err != nil {
		writeError(w, http.StatusBadRequest, "the upload was cut off after "+strconv.FormatInt(n, 10)+" bytes: "+err.Error(), "")
		return
	}
	res := api.UploadTest{Bytes: n, Seconds: took}
	if took > 0 {
		res.MiBPerS = float64(n) / (1 << 20) / took
	}
	writeJSON(w, http.StatusOK, res)
}

// refuse answers an upload with an error. When the client may still be
// sending (drain), the rest of the body is read and discarded first, so
// that the answer reaches a client that reads only once it has sent
// everything, instead of a connection reset.
func (in *Installer) refuse(w http.ResponseWriter, r *http.Request, drain bool, code int, msg, job string) {
	if drain {
		in.discard(w, r)
	}
	writeError(w, code, msg, job)
}

func (in *Installer) discard(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	n, err := api.DiscardBody(w, r, in.Drain)
	if err != nil {
		in.log().Warn("the rest of an upload was not read; the client may not see the answer", "discarded", n, "took", time.Since(start).Round(time.Millisecond), "err", err)
	} else if n > 64<<10 {
		in.log().Info("discarded the rest of an upload before answering", "bytes", n, "took", time.Since(start).Round(time.Millisecond))
	}
}

func (in *Installer) serveJobs(w http.ResponseWriter, r *http.Request) {
	jobs := in.jobs().List()
	out := api.Jobs{Jobs: make([]api.Job, len(jobs))}
	for i, j := range jobs {
		out.Jobs[i] = j.Status()
	}
	writeJSON(w, http.StatusOK, out)
}

func (in *Installer) serveJob(w http.ResponseWriter, r *http.Request) {
	j, ok := in.jobs().Get(r.PathValue("id"))
	if !ok {
		writeError(w, http.StatusNotFound, "there is no job "+strconv.Quote(r.PathValue("id"))+"; jobs are kept until the agent restarts or newer ones replace them", "")
		return
	}
	writeJSON(w, http.StatusOK, j.Status())
}

// HTTPStatus is the HTTP status POST /api/v1/install answers for an error
// of Start or StartBundle; other endpoints that install through Start use
// it too.
func HTTPStatus(err error) int {
	switch {
	case errors.Is(err, ErrSystem):
		return http.StatusInternalServerError
	case errors.Is(err, ErrNotListed):
		return http.StatusBadGateway
	case errors.Is(err, ErrBusy), errors.Is(err, ErrNotNewer), errors.Is(err, ErrUncommitted), errors.Is(err, ErrBelowFloor):
		return http.StatusConflict
	case errors.Is(err, kpkg.ErrUnknownKey):
		return http.StatusForbidden
	case errors.Is(err, ErrIncompatible), errors.Is(err, kpkg.ErrManifest), errors.Is(err, ErrAppFailed):
		return http.StatusUnprocessableEntity
	}
	// Damaged, truncated, tampered or broken-off uploads.
	return http.StatusBadRequest
}

func writeError(w http.ResponseWriter, code int, msg, job string) {
	writeJSON(w, code, api.Error{Error: msg, Job: job})
}

// writeJSON answers through the API's one JSON writer.
func writeJSON(w http.ResponseWriter, code int, v any) { api.WriteJSON(w, code, v) }
