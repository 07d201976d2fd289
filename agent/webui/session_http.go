package webui

import (
	"net/http"

	"keel.dev/keel/agent/api"
)

// A page's handler gets the request's session.
type sessionHandler func(w http.ResponseWriter, r *http.Request, ses Session)

// allowMustChange marks the pages a user with the first-boot password may
// open: changing it, and logging out.
const allowMustChange = 1

// streamedForm marks a form the handler reads as a stream (an upload),
// checking the token itself: the session neither bounds nor parses it.
const streamedForm = 2

// session runs h for a logged-in browser. Without a live session it sends
// the browser to the login page; a POST must carry the session's token;
// a user who must change the first-boot password gets 403 and the change
// form on every other page.
func (u *UI) session(h sessionHandler, flags int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(CookieName)
		var ses Session
		ok := err == nil
		if ok {
			ses, ok = u.Sessions.Get(c.Value)
		}
		if !ok {
			if r.Method != http.MethodGet {
				u.render(w, http.StatusUnauthorized, "login", page{Error: "your session has ended (logged out, timed out, or the appliance restarted); log in again"})
				return
			}
			http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
			return
		}
		api.LoggedIn(r)
		if r.Method == http.MethodPost && flags&streamedForm == 0 {
			// Forms are small; a PKCS#12 file is the largest.
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if !ses.ValidToken(r.PostFormValue("csrf")) {
				u.cfg.Log.Warn("web form without its session's token refused", "path", r.URL.Path, "client", r.RemoteAddr)
				u.render(w, http.StatusForbidden, "error", page{Session: &ses, Error: "this form is out of date or did not come from the appliance's own page; reload the page and try again"})
				return
			}
		}
		if flags&allowMustChange == 0 && u.cfg.MustChange != nil && u.cfg.MustChange(ses.User) {
			u.render(w, http.StatusForbidden, "password", page{Session: &ses, Error: "the first-boot password works only to choose a new one: choose your own password first", MustChange: true})
			return
		}
		h(w, r, ses)
	})
}

// maxFormBytes bounds a page's form.
const maxFormBytes = 1 << 20

// setCookie hands the browser its session.
func setCookie(w http.ResponseWriter, ses *Session) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: ses.ID, Path: "/",
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: "", Path: "/", MaxAge: -1,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

// TokenHeader carries the session's anti-forgery token on the pages'
// scripts' calls of the JSON API.
const TokenHeader = "X-Keel-Token"

// Authenticate is the JSON API's session check (api.Config.Session): a
// request with a live session cookie is its user's; one that changes
// state must also carry the session's token in TokenHeader. No cookie:
// "" and "", so the API asks for Basic auth.
func (s *Sessions) Authenticate(r *http.Request) (user, refusal string) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return "", ""
	}
	ses, ok := s.Get(c.Value)
	if !ok {
		return "", ""
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	default:
		if !ses.ValidToken(r.Header.Get(TokenHeader)) {
			return "", "this request has the web session's cookie but not its token (" + TokenHeader + "); scripts log in with Basic auth, pages send the token"
		}
	}
	return ses.User, ""
}
