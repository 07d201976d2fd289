package appspec

import (
	"strings"
	"testing"
	"time"
)

const demo = `{
  "name": "demo",
  "version": "1.1.0",
  "command": "/bin/demo",
  "args": ["-v"],
  "env": {"PORT": "8080"},
  "ports": [8080],
  "health": {"http": {"port": 8080, "path": "/healthz"}, "timeout": "20s"},
  "stop_timeout": "5s"
}`

func TestParseFillsDefaults(t *testing.T) {
	s, err := Parse([]byte(demo))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "demo" || s.Version != "1.1.0" || s.Command != "/bin/demo" || s.Env["PORT"] != "8080" || len(s.Args) != 1 {
		t.Errorf("spec %+v", s)
	}
	h := s.Health
	if h.HTTP == nil || h.HTTP.Port != 8080 || h.HTTP.Path != "/healthz" || h.HTTP.ExpectStatus != 200 {
		t.Errorf("http check %+v", h.HTTP)
	}
	if h.Timeout.D() != 20*time.Second || h.Interval.D() != time.Second || s.StopTimeout.D() != 5*time.Second {
		t.Errorf("durations %v %v %v", h.Timeout.D(), h.Interval.D(), s.StopTimeout.D())
	}
	min, err := Parse([]byte(`{"name":"x","version":"1.0.0","command":"/x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if min.Health.Timeout.D() != DefaultHealthTimeout || min.StopTimeout.D() != DefaultStopTimeout {
		t.Errorf("defaults %+v", min)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	s, err := Parse([]byte(demo))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Marshal(*s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"timeout": "20s"`) {
		t.Errorf("durations are not strings:\n%s", b)
	}
	s2, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := Marshal(*s2)
	if string(b) != string(b2) {
		t.Errorf("round trip differs:\n%s\n%s", b, b2)
	}
	// Marshal leaves the caller's spec as it was.
	in := Spec{Name: "a", Version: "1.0.0", Command: "/a", Health: Health{HTTP: &HTTPCheck{Port: 80}}}
	if _, err := Marshal(in); err != nil || in.Health.HTTP.Path != "" || in.StopTimeout != 0 {
		t.Errorf("Marshal changed its argument: %+v %v", in, err)
	}
	if _, err := Marshal(Spec{Name: "A"}); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("Marshal of an invalid spec: %v", err)
	}
}

func TestErrorsNameTheField(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"version":"1.0.0","command":"/x"}`, "name:"},
		{`{"name":"Demo","version":"1.0.0","command":"/x"}`, "name:"},
		{`{"name":"d","version":"1.0","command":"/x"}`, "version:"},
		{`{"name":"d","version":"1.0.0"}`, "command:"},
		{`{"name":"d","version":"1.0.0","command":"bin/x"}`, "command:"},
		{`{"name":"d","version":"1.0.0","command":"/bin/../x"}`, "command:"},
		{`{"name":"d","version":"1.0.0","command":"/x","env":{"DATA_DIR":"/"}}`, "env.DATA_DIR:"},
		{`{"name":"d","version":"1.0.0","command":"/x","env":{"A=B":"1"}}`, "env:"},
		{`{"name":"d","version":"1.0.0","command":"/x","ports":[0]}`, "ports[0]:"},
		{`{"name":"d","version":"1.0.0","command":"/x","ports":[80,80]}`, "ports[1]:"},
		{`{"name":"d","version":"1.0.0","command":"/x","ports":["80"]}`, "ports"},
		{`{"name":"d","version":"1.0.0","command":"/x","ports":[8080,443]}`, "ports[1]: 443 is the appliance's own"},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"http":{"port":70000}}}`, "health.http.port:"},
		{`{"name":"d","version":"1.0.0","command":"/x","ports":[80],"health":{"http":{"port":81}}}`, "health.http.port: 81 is not one of ports"},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"http":{"port":80,"path":"healthz"}}}`, "health.http.path:"},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"http":{"port":80,"expect_status":42}}}`, "health.http.expect_status:"},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"http":{"port":80},"command":["/c"]}}`, "health: has both"},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"command":["c"]}}`, "health.command[0]:"},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"timeout":"soon"}}`, `health.timeout: "soon" is not a duration`},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"timeout":"-1s"}}`, "health.timeout:"},
		{`{"name":"d","version":"1.0.0","command":"/x","health":{"timeout":"1s","interval":"2s"}}`, "health.interval:"},
		{`{"name":"d","version":"1.0.0","command":"/x","stop_timeout":5}`, "stop_timeout: 5 is not a duration"},
		{`{"name":"d","version":"1.0.0","command":"/x","data_mib":8}`, "data_mib: 8 is below the smallest data volume, 16 MiB"},
		{`{"name":"d","version":"1.0.0","command":"/x","data_mib":-1}`, "data_mib: -1 is below"},
		{`{"name":"d","version":"1.0.0","command":"/x","helth":{}}`, `unknown field "helth"`},
		{`{"name":"d","version":"1.0.0","command":"/x"} {}`, "after the JSON object"},
		{`not json`, "app.json:"},
	} {
		_, err := Parse([]byte(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "app.json: ") {
			t.Errorf("%s: error %v, want it to say %q", c.json, err, c.want)
		}
	}
}
