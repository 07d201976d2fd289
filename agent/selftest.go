package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/atomicfile"
	"keel.dev/keel/hwtest"
)

// hwtestPath keeps the last self-test's report.
const hwtestPath = keelDir + "/hwtest.json"

// selfTest runs the hardware self-test for the API, the console and the
// boot argument: one run at a time, the last report kept.
type selfTest struct {
	a       *agent
	mu      sync.Mutex
	running bool
	last    *hwtest.Report
}

// HWTestRequest is the body of POST /api/v1/hwtest.
type HWTestRequest struct {
	Profile string      `json:"profile"` // a shipped profile; "" matches the hardware
	Mode    hwtest.Mode `json:"mode"`    // quick (default) or full
}

var errSelfTestBusy = errors.New("a hardware self-test is running; wait for its job to finish (GET /api/v1/jobs)")

func (s *selfTest) options(profile string, mode hwtest.Mode) (hwtest.Options, error) {
	o := hwtest.Options{Mode: mode}
	if o.Mode == "" {
		o.Mode = hwtest.Quick
	}
	if o.Mode != hwtest.Quick && o.Mode != hwtest.Full {
		return o, api.FieldError{Field: "mode", Problem: "use quick or full"}
	}
	if s.a.dataMounted() {
		o.ScratchDir = keelDir
	}
	if profile == "" {
		o.Profile = hwtest.Match(o)
		return o, nil
	}
	p, err := hwtest.LookupProfile(profile)
	if err != nil {
		return o, api.FieldError{Field: "profile", Problem: err.Error()}
	}
	o.Profile = p
	return o, nil
}

// run runs one self-test; progress names each check as it starts.
func (s *selfTest) run(ctx context.Context, o hwtest.Options) (hwtest.Report, error) {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return hwtest.Report{}, errSelfTestBusy
	}
	s.running = true
	s.mu.Unlock()
	// The disks behind the storage controllers the boot did not use
	// get their drivers after it; a test started before would miss them.
	select {
	case <-s.a.storage:
	case <-ctx.Done():
	}
	r := hwtest.Run(ctx, o)
	s.mu.Lock()
	s.running, s.last = false, &r
	s.mu.Unlock()
	if s.a.dataMounted() {
		if b, err := json.MarshalIndent(r, "", "  "); err == nil {
			if err := atomicfile.Write(hwtestPath, append(b, '\n'), 0o600); err != nil {
				s.a.log.Warn("the self-test's report was not kept", "err", err)
			}
		}
	}
	s.a.log.Info("hardware self-test", "profile", r.Profile, "mode", r.Mode, "passed", r.Passed, "took_s", r.Took)
	return r, nil
}

// lastReport is the last run's, from this boot or kept from before.
func (s *selfTest) lastReport() *hwtest.Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		if b, err := os.ReadFile(hwtestPath); err == nil {
			var r hwtest.Report
			if json.Unmarshal(b, &r) == nil {
				s.last = &r
			}
		}
	}
	return s.last
}

// routes:
//
//	POST /api/v1/hwtest {"profile", "mode"} → 202 {"job", "message"}; the report when its job is done
//	GET  /api/v1/hwtest                     → 200 {"running", "report": {"profile", "mode", "passed", "checks": [{"name", "status", "sentence", "details"}]…}}
//	GET  /api/v1/hwtest/profiles            → 200 {"profiles": [{"name", "description", …}]}
func (s *selfTest) routes(mux api.Mux) {
	mux.Handle("POST /api/v1/hwtest", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req HWTestRequest
		if r.ContentLength != 0 {
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil && !errors.Is(err, io.EOF) {
				api.WriteError(w, http.StatusBadRequest, `send {"profile": NAME or "", "mode": "quick" or "full"}`)
				return
			}
		}
		o, err := s.options(req.Profile, req.Mode)
		var fe api.FieldError
		if errors.As(err, &fe) {
			api.WriteJSON(w, http.StatusBadRequest, api.Error{Error: fe.Problem, Fields: []api.FieldError{fe}})
			return
		}
		s.mu.Lock()
		busy := s.running
		s.mu.Unlock()
		if busy {
			api.WriteError(w, http.StatusConflict, errSelfTestBusy.Error())
			return
		}
		job := s.a.jobs.Begin("hwtest", "hardware self-test ("+string(o.Mode)+", profile "+o.Profile.Name+")")
		done := 0
		o.Progress = func(name string) {
			job.Say("checking " + name)
			job.Progress(float64(done) / 7)
			done++
		}
		go func() {
			rep, err := s.run(s.a.ctx, o)
			switch {
			case err != nil:
				job.End(err, "")
			case !rep.Passed:
				var fails []string
				for _, c := range rep.Checks {
					if c.Status == hwtest.Fail {
						fails = append(fails, c.Name+": "+c.Sentence)
					}
				}
				job.End(errors.New("the hardware self-test failed: "+strings.Join(fails, "; ")), "")
			default:
				job.End(nil, "the hardware self-test passed; GET /api/v1/hwtest has the report")
			}
		}()
		api.WriteJSON(w, http.StatusAccepted, map[string]string{"job": job.ID(), "message": "the hardware self-test runs; GET /api/v1/hwtest has the report when its job is done"})
	}))
	mux.Handle("GET /api/v1/hwtest", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		running := s.running
		s.mu.Unlock()
		api.WriteJSON(w, http.StatusOK, map[string]any{"running": running, "report": s.lastReport()})
	}))
	mux.Handle("GET /api/v1/hwtest/profiles", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps, _ := hwtest.Profiles()
		out := []hwtest.Profile{}
		for _, n := range hwtest.ProfileNames() {
			out = append(out, ps[n])
		}
		api.WriteJSON(w, http.StatusOK, map[string]any{"profiles": out})
	}))
}

// bootSelfTest is keel.hwtest=1: a quick self-test once booted, its
// table on the consoles.
func (a *agent) bootSelfTest() {
	a.say("hwtest: the hardware self-test runs (keel.hwtest=1)")
	var b strings.Builder
	if err := a.selftest.console(a.ctx, &b); err != nil {
		a.say("hwtest: %v", err)
		return
	}
	fmt.Fprint(a.con, b.String())
}

// console runs a quick self-test for the console menu, printing the
// table on w.
func (s *selfTest) console(ctx context.Context, w io.Writer) error {
	o, err := s.options("", hwtest.Quick)
	if err != nil {
		return err
	}
	o.Progress = func(name string) { io.WriteString(w, "checking "+name+"…\n") }
	r, err := s.run(ctx, o)
	if err != nil {
		return err
	}
	// The console menu writes to the serial port itself while log lines
	// queue for it (pid1.Console): the run's own log line is let out
	// first, or it lands in the middle of the table (seen in CI).
	if s.a.console != nil {
		s.a.console.Flush(2 * time.Second)
	}
	r.Table(w)
	return nil
}
