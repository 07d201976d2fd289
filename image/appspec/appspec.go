// Package appspec is the schema of app.json, the file at the root of an
// application slot's squashfs that tells the agent how to run the
// application and how to tell that it is healthy. It has no side effects;
// image/ writes it and agent/ reads it.
//
// An example:
//
//	{
//	  "name": "demo",
//	  "version": "1.1.0",
//	  "command": "/bin/demo",
//	  "env": {"PORT": "8080"},
//	  "ports": [8080],
//	  "health": {"http": {"port": 8080, "path": "/healthz"}, "timeout": "30s"},
//	  "stop_timeout": "10s"
//	}
//
// Paths (command, a health command's first word) are inside the slot. The
// agent runs the command as an unprivileged user, in the application's data
// folder, with DATA_DIR naming that folder and the spec's env added.
package appspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"keel.dev/keel/image/kpkg"
)

// File is the spec's path at the root of an application slot.
const File = "app.json"

// Defaults that Parse fills in.
const (
	DefaultHealthTimeout  = 30 * time.Second
	DefaultHealthInterval = time.Second
	DefaultStopTimeout    = 10 * time.Second
	DefaultExpectStatus   = 200
	DefaultHealthPath     = "/"
)

// APIPort is the TCP port the agent serves its API and web interface on;
// an application may not declare it.
const APIPort = 443

// Reserved names the agent sets in the application's environment; a spec
// may not set them.
var Reserved = []string{"DATA_DIR", "APP_DIR", "APP_NAME", "APP_VERSION", "HOME"}

// Spec is the content of app.json.
type Spec struct {
	Name    string            `json:"name"`    // lower case, digits, ".", "_", "-"; names the data folder
	Version string            `json:"version"` // semantic version
	Command string            `json:"command"` // absolute path inside the slot, e.g. "/bin/demo"
	Args    []string          `json:"args,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Ports   []int             `json:"ports,omitempty"` // TCP ports it binds
	Health  Health            `json:"health"`
	// StopTimeout is how long the application has to exit after SIGTERM
	// before it is killed. Default 10s.
	StopTimeout Duration `json:"stop_timeout,omitempty"`
	// DataMiB is the most its data folder may hold, in MiB: the folder is
	// a volume of its own of that size, so the application cannot fill
	// the data partition. 0: half the data partition. The volume keeps
	// the size it was made with (see package appdata).
	DataMiB int `json:"data_mib,omitempty"`
}

// MinDataMiB is the smallest data volume a spec may ask for.
const MinDataMiB = 16

// Health says how the agent tells the application is healthy: an HTTP
// check or a command (run as the application's user, exiting 0). With
// neither, the application is healthy while its process runs.
type Health struct {
	HTTP    *HTTPCheck `json:"http,omitempty"`
	Command []string   `json:"command,omitempty"`
	// Timeout is how long after a start the check must pass. Default 30s.
	Timeout Duration `json:"timeout,omitempty"`
	// Interval is the time between attempts. Default 1s.
	Interval Duration `json:"interval,omitempty"`
}

// HTTPCheck is a GET on 127.0.0.1:Port+Path that must answer ExpectStatus.
type HTTPCheck struct {
	Port         int    `json:"port"`
	Path         string `json:"path,omitempty"`          // default "/"
	ExpectStatus int    `json:"expect_status,omitempty"` // default 200
}

// Duration is a time.Duration written in JSON as a string such as "30s".
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string such as "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	v, err := time.Duration(0), json.Unmarshal(b, &s)
	if err == nil {
		v, err = time.ParseDuration(s)
	}
	if err != nil {
		// The decoder adds the field's name to a type error.
		return &json.UnmarshalTypeError{Value: string(b), Type: durationType}
	}
	*d = Duration(v)
	return nil
}

var durationType = reflect.TypeFor[Duration]()

// Parse reads app.json, checks every field and fills in the defaults. An
// error names the field at fault.
func Parse(b []byte) (*Spec, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" && te.Type == durationType {
			return nil, fmt.Errorf("%s: %s: %s is not a duration such as \"30s\"", File, te.Field, te.Value)
		}
		if errors.As(err, &te) && te.Field != "" {
			return nil, fmt.Errorf("%s: %s: must be %s, not %s", File, te.Field, te.Type, te.Value)
		}
		return nil, fmt.Errorf("%s: %w", File, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: data after the JSON object", File)
	}
	s.SetDefaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Marshal writes the spec as app.json, after checking it.
func Marshal(s Spec) ([]byte, error) {
	c := s
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// SetDefaults fills in the fields left zero that have a default.
func (s *Spec) SetDefaults() {
	if s.StopTimeout == 0 {
		s.StopTimeout = Duration(DefaultStopTimeout)
	}
	h := &s.Health
	if h.Timeout == 0 {
		h.Timeout = Duration(DefaultHealthTimeout)
	}
	if h.Interval == 0 {
		h.Interval = Duration(DefaultHealthInterval)
	}
	if h.HTTP != nil {
		c := *h.HTTP // never change the caller's check
		if c.Path == "" {
			c.Path = DefaultHealthPath
		}
		if c.ExpectStatus == 0 {
			c.ExpectStatus = DefaultExpectStatus
		}
		h.HTTP = &c
	}
}

// Validate checks every field; the error names the first field at fault.
func (s *Spec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %s", File, field, fmt.Sprintf(format, args...))
	}
	if err := kpkg.CheckName(s.Name); err != nil {
		return bad("name", "%v", err)
	}
	if _, err := kpkg.ParseVersion(s.Version); err != nil {
		return bad("version", "%v", err)
	}
	if err := checkSlotPath(s.Command); err != nil {
		return bad("command", "%v", err)
	}
	if s.DataMiB != 0 && s.DataMiB < MinDataMiB {
		return bad("data_mib", "%d is below the smallest data volume, %d MiB (0 for the default)", s.DataMiB, MinDataMiB)
	}
	for i, a := range s.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return bad(fmt.Sprintf("args[%d]", i), "contains a NUL byte")
		}
	}
	for k, v := range s.Env {
		switch {
		case k == "" || strings.ContainsAny(k, "=\x00"):
			return bad("env", "name %q is empty or has '=' or NUL", k)
		case strings.IndexByte(v, 0) >= 0:
			return bad("env."+k, "contains a NUL byte")
		case slices.Contains(Reserved, k):
			return bad("env."+k, "is set by the box; an application may not set it")
		}
	}
	for i, p := range s.Ports {
		if p < 1 || p > 65535 {
			return bad(fmt.Sprintf("ports[%d]", i), "%d is not a port number (1-65535)", p)
		}
		if slices.Contains(s.Ports[:i], p) {
			return bad(fmt.Sprintf("ports[%d]", i), "%d is listed twice", p)
		}
		if p == APIPort {
			return bad(fmt.Sprintf("ports[%d]", i), "%d is the appliance's own (its API and web interface); choose another port", p)
		}
	}
	h := s.Health
	if h.HTTP != nil && len(h.Command) > 0 {
		return bad("health", "has both http and command; choose one")
	}
	if c := h.HTTP; c != nil {
		if c.Port < 1 || c.Port > 65535 {
			return bad("health.http.port", "%d is not a port number (1-65535)", c.Port)
		}
		if len(s.Ports) > 0 && !slices.Contains(s.Ports, c.Port) {
			return bad("health.http.port", "%d is not one of ports %v", c.Port, s.Ports)
		}
		if c.Path != "" && (!strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \t\r\n\x00")) {
			return bad("health.http.path", "%q must start with / and have no spaces", c.Path)
		}
		if c.ExpectStatus != 0 && (c.ExpectStatus < 100 || c.ExpectStatus > 599) {
			return bad("health.http.expect_status", "%d is not an HTTP status (100-599)", c.ExpectStatus)
		}
	}
	if len(h.Command) > 0 {
		if err := checkSlotPath(h.Command[0]); err != nil {
			return bad("health.command[0]", "%v", err)
		}
		for i, a := range h.Command {
			if strings.IndexByte(a, 0) >= 0 {
				return bad(fmt.Sprintf("health.command[%d]", i), "contains a NUL byte")
			}
		}
	}
	if h.Timeout < 0 {
		return bad("health.timeout", "%v is negative", h.Timeout.D())
	}
	if h.Interval < 0 {
		return bad("health.interval", "%v is negative", h.Interval.D())
	}
	if h.Timeout > 0 && h.Interval > h.Timeout {
		return bad("health.interval", "%v is longer than the timeout %v", h.Interval.D(), h.Timeout.D())
	}
	if s.StopTimeout < 0 {
		return bad("stop_timeout", "%v is negative", s.StopTimeout.D())
	}
	return nil
}

// checkSlotPath accepts a clean absolute path inside the slot.
func checkSlotPath(p string) error {
	if p == "" {
		return errors.New("is empty; give the absolute path of the program inside the slot, e.g. \"/bin/demo\"")
	}
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" || strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("%q is not a clean absolute path inside the slot, e.g. \"/bin/demo\"", p)
	}
	return nil
}
