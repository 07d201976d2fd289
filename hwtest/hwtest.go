// Package hwtest is the hardware self-test: CPU, memory, disks, network
// interfaces, the RTC, the watchdog and temperature sensors, each checked
// against a hardware profile and answered pass, fail or skip with a
// sentence. The agent runs it from the console menu, the API and the boot
// argument keel.hwtest=1; cmd/hwtest runs it on its own.
//
// Nothing here changes the box: the disk write test uses a scratch file
// on the data partition, the watchdog is looked up but never opened
// (opening it arms it), and the RTC is only read.
package hwtest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is a check's outcome.
type Status string

// The outcomes.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip" // the hardware has no such thing, or the check cannot run here; the sentence says why
)

// Check is one check's result.
type Check struct {
	Name     string   `json:"name"`
	Status   Status   `json:"status"`
	Sentence string   `json:"sentence"`
	Details  []string `json:"details,omitempty"`
	Took     float64  `json:"took_s"`
}

// Report is a whole run.
type Report struct {
	Profile  string    `json:"profile"`
	Mode     Mode      `json:"mode"`
	Started  time.Time `json:"started"`
	Took     float64   `json:"took_s"`
	Passed   bool      `json:"passed"` // no check failed
	Checks   []Check   `json:"checks"`
	Canceled bool      `json:"canceled,omitempty"`
}

// Mode is how thorough a run is.
type Mode string

// The modes.
const (
	Quick Mode = "quick" // at most about 2 minutes in a VM
	Full  Mode = "full"  // whole disks, a quarter of free memory
)

// Options is what to test against and where the system is.
type Options struct {
	Profile Profile
	Mode    Mode
	// ScratchDir is a folder on the data partition for the disk
	// write-read test; "" skips it.
	ScratchDir string
	// Sys, Proc and Dev are where sysfs, procfs and the device nodes are
	// ("/sys", "/proc", "/dev" when empty); tests point them elsewhere.
	Sys, Proc, Dev string
	// Progress is told each check's name as it starts.
	Progress func(name string)
}

func (o Options) sys(p string) string  { return or(o.Sys, "/sys") + "/" + p }
func (o Options) proc(p string) string { return or(o.Proc, "/proc") + "/" + p }
func (o Options) dev(p string) string  { return or(o.Dev, "/dev") + "/" + p }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checker is one check.
type checker struct {
	name string
	run  func(ctx context.Context, o Options) Check
}

func checkers() []checker {
	return []checker{
		{"cpu", checkCPU},
		{"memory", checkMemory},
		{"disks", checkDisks},
		{"nics", checkNICs},
		{"rtc", checkRTC},
		{"watchdog", checkWatchdog},
		{"sensors", checkSensors},
	}
}

// Run runs every check in order; a canceled ctx stops between checks.
func Run(ctx context.Context, o Options) Report {
	if o.Mode == "" {
		o.Mode = Quick
	}
	r := Report{Profile: o.Profile.Name, Mode: o.Mode, Started: time.Now(), Passed: true, Checks: []Check{}}
	for _, c := range checkers() {
		if ctx.Err() != nil {
			r.Canceled = true
			break
		}
		if o.Progress != nil {
			o.Progress(c.name)
		}
		t0 := time.Now()
		res := c.run(ctx, o)
		res.Name = c.name
		res.Took = time.Since(t0).Seconds()
		if res.Status == Fail {
			r.Passed = false
		}
		r.Checks = append(r.Checks, res)
	}
	if r.Canceled {
		r.Passed = false
	}
	r.Took = time.Since(r.Started).Seconds()
	return r
}

// Table writes the report as an 80-column table.
func (r Report) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "check\tresult\twhat was found\n")
	for _, c := range r.Checks {
		lines := wrap(c.Sentence, 58)
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, strings.ToUpper(string(c.Status)), lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(tw, "\t\t%s\n", l)
		}
		for _, d := range c.Details {
			for _, l := range wrap(d, 56) {
				fmt.Fprintf(tw, "\t\t  %s\n", l)
			}
		}
	}
	tw.Flush()
	verdict := "passed (skips say why)"
	if !r.Passed {
		verdict = "FAILED: see the checks marked FAIL"
		if r.Canceled {
			verdict = "stopped before every check ran"
		}
	}
	fmt.Fprintf(w, "hwtest (%s, profile %s) in %.1f s: %s\n", r.Mode, r.Profile, r.Took, verdict)
}

func wrap(s string, width int) []string {
	var out []string
	line := ""
	for _, w := range strings.Fields(s) {
		if line != "" && len(line)+1+len(w) > width {
			out = append(out, line)
			line = w
			continue
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	return append(out, line)
}

func pass(format string, args ...any) Check {
	return Check{Status: Pass, Sentence: fmt.Sprintf(format, args...)}
}

func fail(format string, args ...any) Check {
	return Check{Status: Fail, Sentence: fmt.Sprintf(format, args...)}
}

func skip(format string, args ...any) Check {
	return Check{Status: Skip, Sentence: fmt.Sprintf(format, args...)}
}
