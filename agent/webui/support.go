package webui

import (
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/updates"
	"keel.dev/keel/agent/utilities"
	"keel.dev/keel/image/downloadkey"
)

// supportView is the Support page: utilities, updates, the download key,
// manual install.
type supportView struct {
	Tool, Host, Port string
	Output           string // the last utility's result as text
	Updates          updates.Listing
	Config           updates.Config
	Key              string    // a download key just issued
	KeyExpires       time.Time // its expiry
	Jobs             []api.Job
}

func (u *UI) supportPage(w http.ResponseWriter, r *http.Request, ses Session) {
	u.renderSupport(w, r, ses, http.StatusOK, "", "", &supportView{Tool: "ping"})
}

func (u *UI) renderSupport(w http.ResponseWriter, r *http.Request, ses Session, code int, msg, failed string, v *supportView) {
	// Without an installer or update service (no data partition) these
	// answer errors; the page still offers the utilities.
	u.get(r, ses, "/api/v1/updates", &v.Updates)
	u.get(r, ses, "/api/v1/updates/config", &v.Config)
	var jobs api.Jobs
	u.get(r, ses, "/api/v1/jobs", &jobs)
	if len(jobs.Jobs) > 5 {
		jobs.Jobs = jobs.Jobs[:5]
	}
	v.Jobs = jobs.Jobs
	u.render(w, code, "support", page{Session: &ses, Support: v, Message: msg, Error: failed})
}

// supportAction is every form of the Support page but the upload.
func (u *UI) supportAction(w http.ResponseWriter, r *http.Request, ses Session) {
	v := &supportView{Tool: r.PostFormValue("tool"), Host: strings.TrimSpace(r.PostFormValue("host")), Port: r.PostFormValue("port")}
	if v.Tool == "" {
		v.Tool = "ping"
	}
	var a reply
	msg := ""
	switch r.PostFormValue("do") {
	case "utility":
		q := utilities.Request{Host: v.Host}
		switch v.Tool {
		case "ping", "traceroute", "dns":
		case "tcp":
			n, err := strconv.Atoi(v.Port)
			if err != nil {
				u.renderSupport(w, r, ses, http.StatusBadRequest, "", "the TCP test needs a port number", v)
				return
			}
			q.Port = n
		default:
			u.renderSupport(w, r, ses, http.StatusBadRequest, "", "choose ping, traceroute, DNS or TCP", v)
			return
		}
		a = u.call(r, ses, http.MethodPost, "/api/v1/utilities/"+v.Tool, q)
		if a.OK() {
			v.Output = utilityText(v.Tool, a.Body)
		}
	case "config":
		a = u.call(r, ses, http.MethodPut, "/api/v1/updates/config", updates.Config{Server: strings.TrimSpace(r.PostFormValue("server")), Channel: strings.TrimSpace(r.PostFormValue("channel")), CA: r.PostFormValue("ca")})
		msg = "the update settings were saved"
	case "check":
		a = u.call(r, ses, http.MethodPost, "/api/v1/updates/check", nil)
		msg = "the update server was asked; the list below is what it offers"
	case "install":
		a = u.call(r, ses, http.MethodPost, "/api/v1/updates/install", updates.Request{Name: r.PostFormValue("name"), Version: r.PostFormValue("version"), IgnoreWait: r.PostFormValue("ignore_wait") == "1"})
	case "key":
		a = u.call(r, ses, http.MethodGet, "/api/v1/updates/download-key", nil)
		if a.OK() {
			v.Key = string(a.Body)
			if k, err := downloadkey.Parse(a.Body); err == nil {
				v.KeyExpires = k.Expires
			}
			msg = "a download key was issued: redeem it on a computer that reaches the vendor before it expires"
		}
	default:
		u.renderSupport(w, r, ses, http.StatusBadRequest, "", "choose an action on the Support page", v)
		return
	}
	if !a.OK() {
		u.renderSupport(w, r, ses, a.Code, "", a.Sentence, v)
		return
	}
	if msg == "" {
		msg = a.Sentence
	}
	u.renderSupport(w, r, ses, http.StatusOK, msg, "", v)
}

// supportUpload installs an uploaded package or bundle. The form is
// multipart with the token first and the file after it, and the file is
// streamed to the installer as it arrives, never held whole.
func (u *UI) supportUpload(w http.ResponseWriter, r *http.Request, ses Session) {
	v := &supportView{Tool: "ping"}
	fields, p, ok := u.streamedForm(w, r, ses, "package", func(msg string) {
		u.renderSupport(w, r, ses, http.StatusBadRequest, "", msg, v)
	})
	if ok {
		u.install(w, r, ses, v, p, fields["reboot"])
	}
}

func (u *UI) install(w http.ResponseWriter, r *http.Request, ses Session, v *supportView, p *multipart.Part, reboot string) {
	defer p.Close()
	path := "/api/v1/install"
	if reboot == "later" {
		path += "?reboot=later"
	}
	a := u.callRaw(r, ses, http.MethodPost, path, p, "application/octet-stream")
	if !a.OK() {
		u.renderSupport(w, r, ses, a.Code, "", a.Sentence, v)
		return
	}
	u.renderSupport(w, r, ses, a.Code, a.Sentence, "", v)
}

// utilityText is a utility's answer as the lines a terminal would show.
func utilityText(tool string, body []byte) string {
	var b strings.Builder
	switch tool {
	case "ping":
		var res utilities.PingResult
		json.Unmarshal(body, &res)
		fmt.Fprintf(&b, "PING %s\n", res.Address)
		for _, rp := range res.Replies {
			if rp.Error != "" {
				fmt.Fprintf(&b, "seq %d: %s\n", rp.Seq, rp.Error)
			} else {
				fmt.Fprintf(&b, "seq %d: reply in %.2f ms\n", rp.Seq, rp.TimeMS)
			}
		}
		fmt.Fprintf(&b, "%d sent, %d received\n", res.Sent, res.Received)
	case "traceroute":
		var res utilities.TraceResult
		json.Unmarshal(body, &res)
		fmt.Fprintf(&b, "traceroute to %s (%s)\n", res.Address, res.Probe)
		for _, h := range res.Hops {
			switch {
			case h.Address != "":
				fmt.Fprintf(&b, "%2d  %s  %.2f ms\n", h.TTL, h.Address, h.TimeMS)
			default:
				fmt.Fprintf(&b, "%2d  *  %s\n", h.TTL, h.Error)
			}
		}
		if res.Reached {
			b.WriteString("reached\n")
		} else if res.Error != "" {
			b.WriteString(res.Error + "\n")
		}
	case "dns":
		var res utilities.DNSResult
		json.Unmarshal(body, &res)
		if res.Error != "" {
			fmt.Fprintf(&b, "%s: %s\n", res.Name, res.Error)
		}
		for _, a := range res.Addresses {
			fmt.Fprintf(&b, "%s has address %s\n", res.Name, a)
		}
		for _, n := range res.Names {
			fmt.Fprintf(&b, "%s is %s\n", res.Name, n)
		}
		fmt.Fprintf(&b, "(%.2f ms)\n", res.TimeMS)
	case "tcp":
		var res utilities.TCPResult
		json.Unmarshal(body, &res)
		if res.Connected {
			fmt.Fprintf(&b, "connected to %s in %.2f ms\n", res.Address, res.TimeMS)
		} else {
			fmt.Fprintf(&b, "could not connect to %s: %s\n", res.Address, res.Error)
		}
	}
	return b.String()
}
