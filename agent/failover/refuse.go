package failover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// changesBothRoles are the changes a relationship forbids on either box:
// a pair runs the same versions with the same key, and the vendor's
// upgrade order (sync, break, upgrade one, verify, upgrade the other,
// establish again) breaks it first.
var changesBothRoles = []string{
	"POST /api/v1/install",
	"POST /api/v1/updates/install",
	"POST /api/v1/restore",
	"POST /api/v1/factory-reset",
	"PUT /api/v1/peer-key",
	"POST /api/v1/peer-key/generate",
}

// syncedPrefixes are the settings a backup takes from its primary.
var syncedPrefixes = []string{
	"/api/v1/users",
	"/api/v1/account-policy",
	"/api/v1/certificates",
	"/api/v1/tls",
	"/api/v1/access",
	"/api/v1/updates/config",
	"/api/v1/backup/settings",
	"/api/v1/time",
}

// Refuse says why a change asked of the API cannot be made while this
// box is in a relationship: a status and a sentence, or 0.
func (s *Service) Refuse(r *http.Request) (int, string) {
	st := s.State()
	if !st.In() {
		return 0, ""
	}
	route := r.Method + " " + r.URL.Path
	if slices.Contains(changesBothRoles, route) && !(route == "POST /api/v1/restore" && r.URL.Query().Get("dry_run") == "1") {
		return http.StatusConflict, fmt.Sprintf("This appliance is %s. Break the failover relationship first: the pair's upgrade order is sync, break, upgrade one, verify, upgrade the other, then establish the relationship again.", describeRole(st))
	}
	if strings.HasPrefix(r.URL.Path, "/api/v1/network/floating/") && r.URL.Path != "/api/v1/network/floating/confirm" {
		var body struct {
			Address string `json:"address"`
		}
		if peek(r, &body) == nil {
			if p, err := netip.ParsePrefix(body.Address); err == nil {
				for _, a := range st.Shared {
					if q, err := a.Prefix(); err == nil && q.Addr() == p.Addr() {
						return http.StatusConflict, fmt.Sprintf("%s moves with the primary role of the failover relationship with %s: use Become primary on the backup, or break the relationship first.", p.Addr(), st.Peer.Serial)
					}
				}
			}
		}
	}
	if st.Role != RoleBackup {
		return 0, ""
	}
	synced := fmt.Sprintf("This appliance is the backup of %s and takes this setting from it at every sync: change it on %s.", st.Peer.Serial, st.Peer.Serial)
	for _, p := range syncedPrefixes {
		if r.URL.Path == p || strings.HasPrefix(r.URL.Path, p+"/") {
			if strings.HasSuffix(r.URL.Path, "/export") || r.URL.Path == "/api/v1/time/sync" {
				return 0, "" // reads, not changes
			}
			return http.StatusConflict, synced
		}
	}
	if route == "PUT /api/v1/network" && s.Network != nil {
		var body, cur struct {
			DNS json.RawMessage `json:"dns"`
			NTP json.RawMessage `json:"ntp_servers"`
		}
		b, err := s.Network.Synced()
		if err == nil && peek(r, &body) == nil && json.Unmarshal(b, &cur) == nil {
			if !sameJSON(body.DNS, cur.DNS) || !sameJSON(body.NTP, cur.NTP) {
				return http.StatusConflict, fmt.Sprintf("This appliance is the backup of %s and takes its DNS and NTP servers from it at every sync: change them on %s; this appliance's own addresses, gateways and routes can be changed here.", st.Peer.Serial, st.Peer.Serial)
			}
		}
	}
	return 0, ""
}

// peek decodes r's JSON body and puts it back for the handler.
func peek(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// sameJSON compares two JSON values by meaning; absent and null and
// empty are the same.
func sameJSON(a, b json.RawMessage) bool {
	norm := func(m json.RawMessage) string {
		var v any
		if len(m) == 0 || json.Unmarshal(m, &v) != nil {
			return "null"
		}
		v = dropEmpty(v)
		out, _ := json.Marshal(v)
		return string(out)
	}
	return norm(a) == norm(b)
}

func dropEmpty(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			x = dropEmpty(x)
			if x == nil {
				delete(t, k)
			} else {
				t[k] = x
			}
		}
		if len(t) == 0 {
			return nil
		}
	case []any:
		if len(t) == 0 {
			return nil
		}
	}
	return v
}
