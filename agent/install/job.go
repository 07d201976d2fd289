package install

import (
	"crypto/rand"
	"encoding/hex"
	"sync"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/image/kpkg"
	"keel.dev/keel/image/layout"
)

// State is a job's life stage, as the API shows it.
type State = api.JobState

// The states of a job.
const (
	Running = api.JobRunning
	Done    = api.JobDone
	Failed  = api.JobFailed
)

// Job is one install, observable while it runs.
type Job struct {
	id   string
	kind string // "install", or "bundle" for a bundle's packages

	mu       sync.Mutex
	version  string
	slot     layout.Label
	pkg      kpkg.Kind
	state    State
	progress float64
	message  string
	// A bundle job installs one package after the other: step names the
	// current one ("installing 2 of 4: app demo 1.1.0") before each
	// progress message, and the package's progress 0..1 fills the window
	// lo..lo+span of the job's.
	step     string
	lo, span float64
}

func newJob(version string, slot layout.Label) *Job {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather)
	return &Job{
		id: hex.EncodeToString(b[:]), kind: "install", version: version, slot: slot,
		state: Running, message: "starting the install of " + version,
	}
}

// ID is the job's random identifier.
func (j *Job) ID() string { return j.id }

// Status returns a consistent snapshot, as the API shows it.
func (j *Job) Status() api.Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	return api.Job{ID: j.id, Kind: j.kind, State: j.state, Progress: j.progress, Message: j.message, Version: j.version, Slot: string(j.slot), Package: string(j.pkg)}
}

func (j *Job) setProgress(p float64) {
	j.mu.Lock()
	p = min(max(p, 0), 1)
	if j.span > 0 {
		p = j.lo + p*j.span
	}
	j.progress = min(max(p, 0), 1)
	j.mu.Unlock()
}

func (j *Job) setMessage(msg string) {
	j.mu.Lock()
	if j.step != "" {
		msg = j.step + "; " + msg
	}
	j.message = msg
	j.mu.Unlock()
}

func (j *Job) finish(s State, msg string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.state, j.message = s, msg
	if s == Done {
		j.progress = 1
	}
}

func (j *Job) finished() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.state != Running
}

// DefaultJobs is how many jobs a registry keeps by default: enough for an
// operator to look back at the last installs, few enough that memory is
// bounded on a box that runs for years.
const DefaultJobs = 20

// Jobs keeps the most recent jobs. The oldest finished job goes when the
// registry is full; a running job is never dropped.
type Jobs struct {
	mu   sync.Mutex
	max  int
	list []*Job // oldest first
}

// NewJobs makes a registry that keeps max jobs (at least 1).
func NewJobs(max int) *Jobs { return &Jobs{max: max} }

func (js *Jobs) add(j *Job) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.list = append(js.list, j)
	for i := 0; len(js.list) > max(js.max, 1) && i < len(js.list); {
		if js.list[i].finished() {
			js.list = append(js.list[:i], js.list[i+1:]...)
			continue
		}
		i++
	}
}

// Get returns the job with id, if it is still kept.
func (js *Jobs) Get(id string) (*Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, j := range js.list {
		if j.id == id {
			return j, true
		}
	}
	return nil, false
}

// List returns the kept jobs, newest first.
func (js *Jobs) List() []*Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	out := make([]*Job, len(js.list))
	for i, j := range js.list {
		out[len(js.list)-1-i] = j
	}
	return out
}

// Begin registers a job of another kind (a backup, a restore, a factory
// reset), so that GET /api/v1/jobs follows it like an install.
func (js *Jobs) Begin(kind, message string) *Job {
	j := newJob("", "")
	j.kind, j.message = kind, message
	js.add(j)
	return j
}

// Progress sets a job's progress (0..1).
func (j *Job) Progress(p float64) { j.setProgress(p) }

// Say sets the job's message.
func (j *Job) Say(msg string) { j.setMessage(msg) }

// End ends the job: done with msg when err is nil, else failed with err's
// sentence.
func (j *Job) End(err error, msg string) {
	if err != nil {
		j.finish(Failed, err.Error())
		return
	}
	j.finish(Done, msg)
}
