package certs

import (
	"encoding/json"
	"errors"
	"net/http"

	"keel.dev/keel/agent/api"
)

// List is GET /api/v1/certificates.
type List struct {
	Certificates []Info      `json:"certificates"`
	Assignments  Assignments `json:"assignments"`
}

// CSRAnswer is POST /api/v1/certificates/csr's answer.
type CSRAnswer struct {
	Certificate Info   `json:"certificate"`
	CSR         string `json:"csr_pem"`
}

// TLSView is GET /api/v1/tls: the settings and the suites one may choose.
type TLSView struct {
	TLSSettings
	Available []string `json:"available_cipher_suites"`
}

// Routes registers the certificate and TLS routes:
//
//	GET    /api/v1/certificates                  200 List
//	POST   /api/v1/certificates/self-signed      Request → 201 Info
//	POST   /api/v1/certificates/csr              Request → 201 CSRAnswer
//	GET    /api/v1/certificates/{id}/csr         200 the CSR, PEM
//	POST   /api/v1/certificates/import           Import → 201 Info
//	POST   /api/v1/certificates/{id}/export      Export → 200 the file (PKCS#12 or PEM)
//	DELETE /api/v1/certificates/{id}             200 {"message"}
//	PUT    /api/v1/certificates/assignments      Assignments → 200 List
//	GET    /api/v1/tls                           200 TLSView
//	PUT    /api/v1/tls                           TLSSettings → 200 TLSView
func (s *Store) Routes(mux api.Mux) {
	mux.Handle("GET /api/v1/certificates", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, List{Certificates: s.List(), Assignments: s.Assignments()})
	}))
	mux.Handle("POST /api/v1/certificates/self-signed", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if !decode(w, r, &req, 16<<10) {
			return
		}
		info, err := s.SelfSigned(req)
		if answerError(w, err) {
			return
		}
		api.WriteJSON(w, http.StatusCreated, info)
	}))
	mux.Handle("POST /api/v1/certificates/csr", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if !decode(w, r, &req, 16<<10) {
			return
		}
		info, csr, err := s.CSR(req)
		if answerError(w, err) {
			return
		}
		api.WriteJSON(w, http.StatusCreated, CSRAnswer{Certificate: info, CSR: csr})
	}))
	mux.Handle("GET /api/v1/certificates/{id}/csr", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		csr, err := s.CSRText(r.PathValue("id"))
		if answerError(w, err) {
			return
		}
		w.Header().Set("Content-Type", "application/pkcs10")
		w.Header().Set("Content-Disposition", `attachment; filename="`+r.PathValue("id")+`.csr"`)
		w.Write([]byte(csr))
	}))
	mux.Handle("POST /api/v1/certificates/import", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in Import
		if !decode(w, r, &in, 2*maxImport) {
			return
		}
		info, err := s.Import(in)
		if answerError(w, err) {
			return
		}
		api.WriteJSON(w, http.StatusCreated, info)
	}))
	mux.Handle("POST /api/v1/certificates/{id}/export", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ex Export
		if !decode(w, r, &ex, 4<<10) {
			return
		}
		data, ct, name, err := s.Export(r.PathValue("id"), ex)
		if answerError(w, err) {
			return
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		w.Write(data)
	}))
	mux.Handle("DELETE /api/v1/certificates/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if answerError(w, s.Delete(r.PathValue("id"))) {
			return
		}
		api.WriteJSON(w, http.StatusOK, map[string]string{"message": "the certificate was deleted"})
	}))
	mux.Handle("PUT /api/v1/certificates/assignments", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a Assignments
		if !decode(w, r, &a, 16<<10) {
			return
		}
		if answerError(w, s.Assign(a)) {
			return
		}
		api.WriteJSON(w, http.StatusOK, List{Certificates: s.List(), Assignments: s.Assignments()})
	}))
	mux.Handle("GET /api/v1/tls", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, TLSView{TLSSettings: s.TLS(), Available: Suites()})
	}))
	mux.Handle("PUT /api/v1/tls", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var t TLSSettings
		if !decode(w, r, &t, 4<<10) {
			return
		}
		if answerError(w, s.SetTLS(t)) {
			return
		}
		api.WriteJSON(w, http.StatusOK, TLSView{TLSSettings: s.TLS(), Available: Suites()})
	}))
}

func decode(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		api.WriteError(w, http.StatusBadRequest, "the body is not the JSON this endpoint takes ("+err.Error()+"); see the README's certificates section")
		return false
	}
	return true
}

// answerError writes err's refusal and reports whether there was one.
func answerError(w http.ResponseWriter, err error) bool {
	var fe api.FieldError
	switch {
	case err == nil:
		return false
	case errors.As(err, &fe):
		api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: fe.Error(), Fields: []api.FieldError{fe}})
	case errors.Is(err, ErrUnknown):
		api.WriteError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrBuiltin), errors.Is(err, ErrInUse):
		api.WriteError(w, http.StatusConflict, err.Error())
	default:
		api.WriteError(w, http.StatusInternalServerError, "the certificates could not be changed ("+err.Error()+"); try again, and check the data partition in the status if it repeats")
	}
	return true
}
