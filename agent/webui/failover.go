package webui

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/agent/failover"
)

// failoverView is the Failover page.
type failoverView struct {
	Status failover.Status
	// Form keeps what the operator typed into the establish form after a
	// refusal.
	Form establishForm
}

type establishForm struct {
	PeerAddress, PeerPort, ReverseAddress, ReversePort, Shared string
}

func (u *UI) failoverPage(w http.ResponseWriter, r *http.Request, ses Session) {
	u.renderFailover(w, r, ses, http.StatusOK, "", "", &failoverView{})
}

func (u *UI) renderFailover(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed string, v *failoverView) {
	if e := u.get(r, ses, "/api/v1/failover", &v.Status); e != "" && failed == "" {
		failed = e
	}
	u.render(w, code, "failover", page{Session: &ses, Failover: v, Message: msg, Error: failed})
}

// failoverAction runs one of the page's forms.
func (u *UI) failoverAction(w http.ResponseWriter, r *http.Request, ses Session) {
	v := &failoverView{}
	var a reply
	switch r.PostFormValue("do") {
	case "establish":
		f := establishForm{PeerAddress: r.PostFormValue("peer_address"), PeerPort: r.PostFormValue("peer_port"),
			ReverseAddress: r.PostFormValue("reverse_address"), ReversePort: r.PostFormValue("reverse_port"), Shared: r.PostFormValue("shared")}
		v.Form = f
		req := failover.EstablishRequest{PeerAddress: strings.TrimSpace(f.PeerAddress), ReverseAddress: strings.TrimSpace(f.ReverseAddress)}
		req.PeerPort, _ = strconv.Atoi(strings.TrimSpace(f.PeerPort))
		req.ReversePort, _ = strconv.Atoi(strings.TrimSpace(f.ReversePort))
		shared, err := sharedLines(f.Shared)
		if err != "" {
			u.renderFailover(w, r, ses, http.StatusBadRequest, "", err, v)
			return
		}
		req.Shared = shared
		set, err := settingsForm(r)
		if err != "" {
			u.renderFailover(w, r, ses, http.StatusBadRequest, "", err, v)
			return
		}
		req.Settings = &set
		a = u.call(r, ses, http.MethodPost, "/api/v1/failover/establish", req)
	case "sync":
		a = u.call(r, ses, http.MethodPost, "/api/v1/failover/sync", nil)
		if a.OK() {
			a.Sentence = "the sync started; this page shows its result when it is done (reload it)"
		}
	case "become-primary":
		a = u.call(r, ses, http.MethodPost, "/api/v1/failover/become-primary", failover.BecomePrimaryRequest{
			FinalSync: r.PostFormValue("final_sync") == "1", Force: r.PostFormValue("force") == "1"})
	case "break":
		a = u.call(r, ses, http.MethodPost, "/api/v1/failover/break", nil)
	case "settings":
		set, err := settingsForm(r)
		if err != "" {
			u.renderFailover(w, r, ses, http.StatusBadRequest, "", err, v)
			return
		}
		a = u.call(r, ses, http.MethodPut, "/api/v1/failover/settings", set)
	case "delete-snapshot":
		a = u.call(r, ses, http.MethodDelete, "/api/v1/failover/snapshots/"+url.PathEscape(r.PostFormValue("name")), nil)
	default:
		u.renderFailover(w, r, ses, http.StatusBadRequest, "", "the form asked for nothing this page does; reload it", v)
		return
	}
	if !a.OK() {
		u.renderFailover(w, r, ses, a.Code, "", a.Sentence, v)
		return
	}
	u.renderFailover(w, r, ses, http.StatusOK, a.Sentence, "", &failoverView{})
}

// failoverSnapshot streams a snapshot of a lost split brain.
func (u *UI) failoverSnapshot(w http.ResponseWriter, r *http.Request, ses Session) {
	req, _ := http.NewRequest(http.MethodGet, "/api/v1/failover/snapshots/"+url.PathEscape(r.PostFormValue("name")), nil)
	u.stream(w, r, ses, req, func(code int, sentence string) {
		u.renderFailover(w, r, ses, code, "", sentence, &failoverView{})
	})
}

// sharedLines reads "INTERFACE ADDRESS/BITS" lines; none means the
// floating addresses this box has.
func sharedLines(s string) ([]failover.SharedAddress, string) {
	var out []failover.SharedAddress
	for i, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		switch len(f) {
		case 0:
			continue
		case 2:
			out = append(out, failover.SharedAddress{Interface: f[0], Address: f[1]})
		default:
			return nil, fmt.Sprintf("shared addresses, line %d: write the interface and the address, e.g. eth1 192.0.2.100/24", i+1)
		}
	}
	return out, ""
}

// settingsForm reads the relationship's settings from a form.
func settingsForm(r *http.Request) (failover.Settings, string) {
	set := failover.DefaultSettings()
	dur := func(field string, d *failover.Duration) string {
		v := strings.TrimSpace(r.PostFormValue(field))
		if v == "" {
			return ""
		}
		x, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Sprintf("%s: %q is not a duration such as 200ms, 1s or 5m", strings.ReplaceAll(field, "_", " "), v)
		}
		*d = failover.Duration(x)
		return ""
	}
	for field, d := range map[string]*failover.Duration{"sync_interval": &set.SyncInterval, "heartbeat_interval": &set.HeartbeatInterval,
		"detection_time": &set.DetectionTime, "reannounce": &set.Reannounce} {
		if e := dur(field, d); e != "" {
			return set, e
		}
	}
	set.Automatic = r.PostFormValue("automatic") == "1"
	set.Witness = strings.TrimSpace(r.PostFormValue("witness"))
	return set, ""
}

// durationText writes a duration as the form takes it.
func durationText(d failover.Duration) string { return d.D().String() }
