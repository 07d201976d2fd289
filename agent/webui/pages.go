package webui

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/failover"
	"keel.dev/keel/agent/supervisor"
	"keel.dev/keel/agent/usersapi"
)

// page is what every template gets.
type page struct {
	Title      string
	Session    *Session // nil on the login page
	Error      string   // the API's sentence when an action failed
	Message    string   // what an action did
	MustChange bool
	User       string // the login form's user name, kept after a failure
	Status     *statusView
	Power      *powerView
	Users      *usersView
	Network    *networkView
	Security   *securityView
	Support    *supportView
	Backup     *backupView
	Failover   *failoverView
	Audit      []api.AuditEntry
}

var pageNames = []string{"login", "password", "status", "power", "error", "users", "network", "audit", "security", "support", "backup", "failover"}

// pageFuncs are the functions the templates call.
var pageFuncs = template.FuncMap{
	"prefix":       func() string { return Prefix },
	"join":         func(s []string) string { return strings.Join(s, " ") },
	"gatewayLines": gatewayLines,
	"routeLines":   routeLines,
	"has":          func(list []string, s string) bool { return slices.Contains(list, s) },
	"percent":      func(f float64) string { return strconv.Itoa(int(f*100+0.5)) + "%" },
	"duration":     durationText,
}

// parsePage parses a page with the layout.
func parsePage(name string) (*template.Template, error) {
	t, err := template.New("layout.html").Funcs(pageFuncs).ParseFS(files, "templates/layout.html", "templates/"+name+".html")
	if err != nil {
		return nil, fmt.Errorf("web interface: page %s: %w", name, err)
	}
	return t, nil
}

// page returns a page's template, parsed the first time it is drawn:
// parsing all twelve took about 0.1 s of an emulated CPU in every boot,
// before the API could answer. The templates are embedded, so a page that
// does not parse is a bug of the build (TestEveryPageParses).
func (u *UI) page(name string) (*template.Template, error) {
	u.pagesMu.Lock()
	defer u.pagesMu.Unlock()
	if t, ok := u.pages[name]; ok {
		return t, nil
	}
	t, err := parsePage(name)
	if err != nil {
		return nil, err
	}
	if u.pages == nil {
		u.pages = make(map[string]*template.Template)
	}
	u.pages[name] = t
	return t, nil
}

// render writes a page whole or, when the template fails, a sentence: a
// half-written page would hide the failure.
func (u *UI) render(w http.ResponseWriter, code int, name string, p page) {
	if p.Title == "" {
		p.Title = titles[name]
	}
	var b bytes.Buffer
	t, err := u.page(name)
	if err == nil {
		err = t.Execute(&b, p)
	}
	if err != nil {
		u.cfg.Log.Error("web page failed", "page", name, "err", err)
		http.Error(w, "the appliance could not draw this page; it logged why; try again, and send the logs to support if it repeats", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

var titles = map[string]string{
	"login": "Log in", "password": "Change password", "status": "Status", "power": "Reboot or shut down", "error": "Refused",
	"users": "Users", "network": "Networking", "audit": "Audit log", "security": "Security", "support": "Support", "backup": "Backup", "failover": "Failover",
}

func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(CookieName); err == nil {
		if _, ok := u.Sessions.Get(c.Value); ok {
			http.Redirect(w, r, Prefix+"/status", http.StatusSeeOther)
			return
		}
	}
	u.render(w, http.StatusOK, "login", page{})
}

func (u *UI) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	user, password := r.PostFormValue("user"), r.PostFormValue("password")
	res := u.cfg.Login(r, user, password)
	if !res.OK {
		if res.Code == 0 {
			return // the browser went away
		}
		if res.RetryAfter != "" {
			w.Header().Set("Retry-After", res.RetryAfter)
		}
		msg := res.Message
		if res.Code == http.StatusUnauthorized {
			msg = "the user name or the password is wrong; check them and try again"
		}
		u.render(w, res.Code, "login", page{Error: msg, User: user})
		return
	}
	// A new session, whatever cookie the browser brought.
	if c, err := r.Cookie(CookieName); err == nil {
		u.Sessions.End(c.Value)
	}
	ses := u.Sessions.New(user)
	setCookie(w, ses)
	u.cfg.Log.Info("web login", "user", user, "client", r.RemoteAddr)
	u.audit(r, user, "login (web)", "ok")
	if u.cfg.MustChange != nil && u.cfg.MustChange(user) {
		http.Redirect(w, r, Prefix+"/password", http.StatusSeeOther)
		return
	}
	http.Redirect(w, r, Prefix+"/status", http.StatusSeeOther)
}

func (u *UI) logout(w http.ResponseWriter, r *http.Request, ses Session) {
	u.Sessions.End(ses.ID)
	clearCookie(w)
	u.cfg.Log.Info("web logout", "user", ses.User, "client", r.RemoteAddr)
	u.audit(r, ses.User, "logout (web)", "ok")
	u.render(w, http.StatusOK, "login", page{Message: "you are logged out"})
}

func (u *UI) passwordPage(w http.ResponseWriter, r *http.Request, ses Session) {
	mc := u.cfg.MustChange != nil && u.cfg.MustChange(ses.User)
	u.render(w, http.StatusOK, "password", page{Session: &ses, MustChange: mc})
}

func (u *UI) password(w http.ResponseWriter, r *http.Request, ses Session) {
	current, next, again := r.PostFormValue("current"), r.PostFormValue("new"), r.PostFormValue("again")
	mc := u.cfg.MustChange != nil && u.cfg.MustChange(ses.User)
	if next != again {
		u.render(w, http.StatusBadRequest, "password", page{Session: &ses, MustChange: mc, Error: "the two new passwords differ; type the same one twice"})
		return
	}
	a := u.call(r, ses, http.MethodPost, "/api/v1/users/"+url.PathEscape(ses.User)+"/password", usersapi.PasswordChange{Current: current, New: next})
	if !a.OK() {
		u.render(w, a.Code, "password", page{Session: &ses, MustChange: mc, Error: a.Sentence})
		return
	}
	// Every session of the user ends, this one too; the browser that
	// changed it goes on in a new one.
	u.Sessions.EndUser(ses.User)
	n := u.Sessions.New(ses.User)
	setCookie(w, n)
	u.cfg.Log.Info("password changed on the web interface", "user", ses.User, "client", r.RemoteAddr)
	u.render(w, http.StatusOK, "password", page{Session: n, Message: "your password was changed; other browsers logged in as " + ses.User + " were logged out"})
}

func (u *UI) audit(r *http.Request, user, action, outcome string) {
	if u.cfg.Audit != nil {
		u.cfg.Audit(r, user, action, outcome)
	}
}

// statusView is the Status page's content, read from GET /api/v1/status.
type statusView struct {
	api.Status
	App struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		State   string `json:"state"`
		Error   string `json:"error"`
	}
	Time struct {
		Synchronized bool      `json:"synchronized"`
		Server       string    `json:"server"`
		LastSync     time.Time `json:"last_sync"`
		Error        string    `json:"error"`
	}
	// Failover is the pair this box is in, when it is in one.
	Failover *failover.Status
	Clock    string
	Uptime   string
}

func (u *UI) statusPage(w http.ResponseWriter, r *http.Request, ses Session) {
	v := &statusView{Status: u.cfg.Status()}
	if len(v.Status.App) > 0 {
		json.Unmarshal(v.Status.App, &v.App)
	}
	if len(v.Status.Time) > 0 {
		json.Unmarshal(v.Status.Time, &v.Time)
	}
	if len(v.Status.Failover) > 0 {
		var f failover.Status
		if json.Unmarshal(v.Status.Failover, &f) == nil && f.Peer != nil {
			v.Failover = &f
		}
	}
	v.Clock = u.cfg.Now().UTC().Format("2006-01-02 15:04:05 UTC")
	v.Uptime = (time.Duration(v.UptimeS) * time.Second).String()
	u.render(w, http.StatusOK, "status", page{Session: &ses, Status: v})
}

// powerView is the confirmation of a power action.
type powerView struct {
	Action string // reboot or shutdown
	Verb   string
	Done   bool
}

var powerVerbs = map[string]string{"reboot": "Reboot", "shutdown": "Shut down"}

func (u *UI) powerPage(w http.ResponseWriter, r *http.Request, ses Session) {
	a := r.URL.Query().Get("action")
	verb, ok := powerVerbs[a]
	if !ok {
		u.render(w, http.StatusBadRequest, "error", page{Session: &ses, Error: "choose reboot or shut down on the Status page"})
		return
	}
	u.render(w, http.StatusOK, "power", page{Session: &ses, Power: &powerView{Action: a, Verb: verb}})
}

func (u *UI) power(w http.ResponseWriter, r *http.Request, ses Session) {
	a := r.PostFormValue("action")
	verb, ok := powerVerbs[a]
	do := u.cfg.Reboot
	if a == "shutdown" {
		do = u.cfg.Shutdown
	}
	if !ok || do == nil {
		u.render(w, http.StatusBadRequest, "error", page{Session: &ses, Error: "choose reboot or shut down on the Status page"})
		return
	}
	u.cfg.Log.Info("power action from the web interface", "action", a, "user", ses.User, "client", r.RemoteAddr)
	u.render(w, http.StatusAccepted, "power", page{Session: &ses, Power: &powerView{Action: a, Verb: verb, Done: true}})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	supervisor.Go(u.cfg.Log, "power action", func() {
		if err := do(); err != nil {
			u.cfg.Log.Error("power action failed", "action", a, "err", err)
		}
	})
}
