package api

import (
	"encoding/json"
	"net/http"
	"time"
)

// The wire types: what the API answers, defined once here and imported by
// the agent's subsystems that answer and by the tests that read the
// answers.

// Mux registers handlers. Server (which adds authentication) and
// http.ServeMux are both one; every subsystem registers its routes on it.
type Mux interface {
	Handle(pattern string, h http.Handler)
}

// Error is every error answer: a sentence that says what to do, the job
// when one had started, and for a form the fields at fault.
type Error struct {
	Error  string       `json:"error"`
	Job    string       `json:"job,omitempty"`
	Fields []FieldError `json:"fields,omitempty"`
}

// FieldError names a field of a request and what is wrong with it.
type FieldError struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Problem }

// Accepted answers a request that started a job (202).
type Accepted struct {
	Job     string `json:"job"`
	Message string `json:"message"` // a sentence: what happened, what follows
}

// UploadTest answers POST /api/v1/install/upload-test: how fast the box
// received an upload over the API's HTTPS path, the bytes thrown away.
// Operators compare it with an install's rate to tell a slow link from a
// slow box; `make bench` uses it as the install's network floor.
type UploadTest struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`   // first byte read to last
	MiBPerS float64 `json:"mib_per_s"` // bytes / seconds, in MiB/s
}

// JobState is a job's life stage.
type JobState string

// The states of a job.
const (
	JobRunning JobState = "running"
	JobDone    JobState = "done"
	JobFailed  JobState = "failed"
)

// Job is a long job (an install, a bundle) as GET /api/v1/jobs/{id}
// shows it.
type Job struct {
	ID       string   `json:"id"`
	Kind     string   `json:"kind"` // "install", "bundle" (an offline bundle), "backup", "restore" or "reset"
	State    JobState `json:"state"`
	Progress float64  `json:"progress"` // 0..1
	Message  string   `json:"message"`  // a sentence
	Version  string   `json:"version"`  // the version being installed (a bundle's current package's)
	Slot     string   `json:"slot"`     // the slot written (a bundle's current package's)
	// Package is the package's kind: "base" (Slot is a base slot) or
	// "app" (Slot is an application slot).
	Package string `json:"package,omitempty"`
}

// Jobs is GET /api/v1/jobs: the kept jobs, newest first.
type Jobs struct {
	Jobs []Job `json:"jobs"`
}

// BaseSlot is one base slot in the status.
type BaseSlot struct {
	Slot      string `json:"slot"`    // "a" or "b"
	Version   string `json:"version"` // "" for an empty slot
	Bootable  bool   `json:"bootable"`
	Committed bool   `json:"committed"` // booted and passed its health checks
	TriesLeft int    `json:"tries_left"`
	Running   bool   `json:"running"`
	Default   bool   `json:"default"` // tried first at the next boot
}

// Status is GET /api/v1/status. The subsystems' parts (App, Network,
// Time) are each subsystem's own Status type, encoded: they import this
// package to answer, so this package cannot name their types. Decode a
// part into apps.Status, netcfg.Status or timesync.Status.
type Status struct {
	Base struct {
		Version string `json:"version"`
		Slot    string `json:"slot"`
		// Floor is the anti-rollback floor: no base below it installs or
		// boots ("" for none).
		Floor string `json:"floor,omitempty"`
		// Slots is both base slots as the boot state has them.
		Slots []BaseSlot `json:"slots,omitempty"`
	} `json:"base"`
	Boot struct {
		Committed      bool   `json:"committed"`
		Trial          bool   `json:"trial"`
		TriesLeft      int    `json:"tries_left"`
		Recovery       bool   `json:"recovery"`
		RecoveryReason string `json:"recovery_reason,omitempty"`
		LastResult     string `json:"last_result"`
		BootStateCopy  string `json:"boot_state_copy"` // primary, backup or none
	} `json:"boot"`
	Data struct {
		State string `json:"state"` // mounted, formatted, unusable, missing
	} `json:"data"`
	Agent struct {
		RSSBytes int64 `json:"rss_bytes"` // resident memory of PID 1
	} `json:"agent"`
	// Certificate is what to pin the TLS certificate the API serves by,
	// instead of skipping the check: its SHA-256 fingerprint, and the
	// SHA-256 of its public key for curl --pinnedpubkey sha256//....
	Certificate struct {
		SHA256          string `json:"sha256"`
		PublicKeySHA256 string `json:"pubkey_sha256"`
	} `json:"certificate"`
	App     json.RawMessage `json:"app,omitempty"` // apps.Status; absent when the data partition is not mounted
	Network json.RawMessage `json:"network,omitempty"`
	Time    json.RawMessage `json:"time,omitempty"`
	// Failover is failover.Status: the pair this box is in, if any.
	Failover json.RawMessage `json:"failover,omitempty"`
	Serial   string          `json:"serial"`
	Hostname string          `json:"hostname"`
	Kernel   string          `json:"kernel"`
	UptimeS  float64         `json:"uptime_s"`
}

// AuditEntry is one line of the audit log: who did what, when, from where,
// and how it ended.
type AuditEntry struct {
	Time    time.Time `json:"time"`
	User    string    `json:"user"`
	Client  string    `json:"client"`  // the peer's address
	Action  string    `json:"action"`  // "login", "logout", or the request: "PUT /api/v1/network"
	Outcome string    `json:"outcome"` // "ok", "accepted", "failed: …", "refused (403 Forbidden)"
}

// AuditLog is GET /api/v1/audit: the newest entries first.
type AuditLog struct {
	Entries []AuditEntry `json:"entries"`
}
