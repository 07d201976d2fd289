package backup

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"keel.dev/keel/agent/api"
)

// PasswordHeader carries a restore's backup password (never in the URL,
// which logs keep).
const PasswordHeader = "X-Backup-Password"

// Request is the body of POST /api/v1/backup.
type Request struct {
	Password       string `json:"password"`
	IncludeHistory bool   `json:"include_history"`
}

// Routes registers the backup and restore routes:
//
//	POST /api/v1/backup                 {"password", "include_history"} → 200 the file (application/octet-stream)
//	GET  /api/v1/backups                200 {"backups": [{"name", "created", "reason", "base_version", "app", "size"}]}
//	POST /api/v1/backups                201 the backup taken now and kept on the box (with the automatic backups' password)
//	GET  /api/v1/backups/{name}         200 the file
//	GET  /api/v1/backup/settings        200 {"password_set", "keep", "daily", "include_history"}
//	PUT  /api/v1/backup/settings        {"password", "keep", "daily", "include_history"} → 200 the settings
//	POST /api/v1/restore[?dry_run=1][&carry_identity=1]   the file, password in X-Backup-Password → Plan (200 dry run, 202 staged: the box restarts)
//	POST /api/v1/restore?backup=NAME[&dry_run=1]…           the same from a backup kept on the box (no body; its password by default)
func (s *Service) Routes(mux api.Mux) {
	mux.Handle("POST /api/v1/backup", http.HandlerFunc(s.serveBackup))
	mux.Handle("GET /api/v1/backups", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, map[string][]Stored{"backups": s.List()})
	}))
	mux.Handle("POST /api/v1/backups", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Auto("taken by " + api.AuthenticatedUser(r.Context()))
		switch {
		case errors.Is(err, ErrBusy):
			api.WriteError(w, http.StatusConflict, err.Error())
		case errors.Is(err, ErrNoAutoPassword):
			api.WriteError(w, http.StatusConflict, err.Error())
		case err != nil:
			api.WriteError(w, http.StatusInternalServerError, "the backup could not be written ("+err.Error()+"); check the free space on the data partition")
		default:
			api.WriteJSON(w, http.StatusCreated, st)
		}
	}))
	mux.Handle("GET /api/v1/backups/{name}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := s.Open(r.PathValue("name"))
		if err != nil {
			api.WriteError(w, http.StatusNotFound, "there is no automatic backup of that name; GET /api/v1/backups lists them")
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="keel-`+r.PathValue("name")+`"`)
		io.Copy(w, f)
	}))
	mux.Handle("GET /api/v1/backup/settings", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := s.LoadSettings()
		st.Password = ""
		api.WriteJSON(w, http.StatusOK, st)
	}))
	mux.Handle("PUT /api/v1/backup/settings", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in Settings
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			api.WriteError(w, http.StatusBadRequest, `send {"password", "keep", "daily", "include_history"} as JSON`)
			return
		}
		st, err := s.SaveSettings(in)
		if err != nil {
			field, _, _ := strings.Cut(err.Error(), ":")
			api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Fields: []api.FieldError{{Field: field, Problem: err.Error()}}})
			return
		}
		st.Password = ""
		api.WriteJSON(w, http.StatusOK, st)
	}))
	mux.Handle("POST /api/v1/restore", http.HandlerFunc(s.serveRestore))
}

func (s *Service) serveBackup(w http.ResponseWriter, r *http.Request) {
	var req Request
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		api.WriteError(w, http.StatusBadRequest, `send {"password": "…", "include_history": false} as JSON`)
		return
	}
	if len(req.Password) < 8 {
		api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: ErrNoPassword.Error(), Fields: []api.FieldError{{Field: "password", Problem: ErrNoPassword.Error()}}})
		return
	}
	serial, _, _ := s.Meta()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="keel-backup-`+serial+"-"+s.now().UTC().Format("20060102-150405")+`.age"`)
	sw := &startWriter{w: w}
	_, err := s.Backup(sw, req.Password, req.IncludeHistory, "manual")
	switch {
	case err == nil:
	case !sw.started && errors.Is(err, ErrBusy):
		w.Header().Del("Content-Disposition")
		api.WriteError(w, http.StatusConflict, err.Error())
	case !sw.started:
		w.Header().Del("Content-Disposition")
		api.WriteError(w, http.StatusInternalServerError, "the backup could not be written ("+err.Error()+"); try again")
	default:
		// Half a file is sent: cut the connection so the download fails
		// visibly (the file would be refused at restore anyway: age
		// authenticates its end).
		s.log().Error("backup failed while it was being sent", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// startWriter notes whether the answer has begun.
type startWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startWriter) Write(b []byte) (int, error) {
	s.started = true
	return s.w.Write(b)
}

func (s *Service) serveRestore(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := RestoreOptions{Password: r.Header.Get(PasswordHeader), DryRun: q.Get("dry_run") == "1", CarryIdentity: q.Get("carry_identity") == "1"}
	o.Compatible = s.Compatible
	var from io.Reader = r.Body
	if name := q.Get("backup"); name != "" {
		// One of the backups kept on the box: no upload, and the
		// automatic backups' password unless another is given (the
		// settings' password may have changed since it was taken).
		f, err := s.Open(name)
		if err != nil {
			api.WriteError(w, http.StatusNotFound, "there is no backup named "+name+" on the appliance; GET /api/v1/backups lists them")
			return
		}
		defer f.Close()
		from = f
		if o.Password == "" {
			o.Password = s.LoadSettings().Password
		}
	}
	plan, err := s.Restore(r.Context(), from, o)
	switch {
	case errors.Is(err, ErrBusy):
		api.WriteError(w, http.StatusConflict, err.Error())
		return
	case errors.Is(err, ErrRefused):
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<30)) // let the client hear it
		api.WriteError(w, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		api.WriteError(w, http.StatusInternalServerError, "the restore could not be staged ("+err.Error()+"); nothing was changed; check the free space on the data partition and try again")
		return
	}
	if o.DryRun {
		api.WriteJSON(w, http.StatusOK, plan)
		return
	}
	api.WriteJSON(w, http.StatusAccepted, plan)
	http.NewResponseController(w).Flush()
	if s.Restart != nil {
		context.AfterFunc(r.Context(), func() {
			if err := s.Restart(); err != nil {
				s.log().Error("restart for the restore", "err", err)
			}
		})
	}
}
