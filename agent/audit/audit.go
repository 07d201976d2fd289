// Package audit keeps the appliance's audit log on the data partition:
// logins, failed logins and every change, who made it, when, from where
// and how it ended (api.AuditEntry), in a bounded size.
//
// It is the one file on the box that is appended to rather than replaced
// whole: an entry is one JSON line written with O_APPEND and fsynced
// before the call returns, so a power cut loses at most the line being
// written, and a torn last line is skipped on reading. Rewriting the whole
// log for every entry would cost a flood of failed logins a quarter of a
// megabyte of writes each.
//
// # HTTP
//
//	GET /api/v1/audit?limit=N  200 {"entries": [{"time", "user", "client", "action", "outcome"}, ...]} newest first
package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"

	"keel.dev/keel/agent/api"
	"keel.dev/keel/agent/atomicfile"
)

// DefaultMaxBytes is the size at which the log starts a new file; the one
// before is kept, so the log holds between one and two of these.
const DefaultMaxBytes = 256 << 10

// Log is the audit log. Its zero value with Path set is ready.
type Log struct {
	// Path is the current file; Path+".1" the one before. Empty keeps
	// entries in memory only (a box without a data partition).
	Path     string
	MaxBytes int64
	Logger   *slog.Logger

	mu     sync.Mutex
	memory []api.AuditEntry // when Path is empty, or the file failed
	ended  bool             // the file is known to end with a whole line
}

func (l *Log) max() int64 {
	if l.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return l.MaxBytes
}

// maxMemory bounds entries kept in memory when the file cannot be written.
const maxMemory = 1000

// Record appends e. A failure to write is logged and the entry kept in
// memory: the action it records has happened already.
func (l *Log) Record(e api.AuditEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Path == "" {
		l.remember(e)
		return
	}
	if err := l.append(e); err != nil {
		if l.Logger != nil {
			l.Logger.Error("audit log not written; the entry is kept in memory until the next restart", "err", err, "action", e.Action, "user", e.User)
		}
		l.remember(e)
	}
}

func (l *Log) remember(e api.AuditEntry) {
	l.memory = append(l.memory, e)
	if len(l.memory) > maxMemory {
		l.memory = slices.Delete(l.memory, 0, len(l.memory)-maxMemory)
	}
}

func (l *Log) append(e api.AuditEntry) error {
	line, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode audit entry: %w", err)
	}
	line = append(line, '\n')
	if st, err := os.Stat(l.Path); err == nil && st.Size()+int64(len(line)) > l.max() {
		l.ended = false
		if err := os.Rename(l.Path, l.Path+".1"); err != nil {
			return fmt.Errorf("start a new audit file: %w", err)
		}
		if err := atomicfile.SyncDir(filepath.Dir(l.Path)); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(l.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open audit log: %w", err)
	}
	if !l.ended {
		// The last write may have been cut mid-line by a power cut: end
		// that line, so that this entry is not lost with it.
		if st, err := f.Stat(); err == nil && st.Size() > 0 {
			last := make([]byte, 1)
			if _, err := f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
				line = append([]byte{'\n'}, line...)
			}
		}
		l.ended = true
	}
	if _, err := f.Write(line); err != nil {
		f.Close()
		return fmt.Errorf("write audit log: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync audit log: %w", err)
	}
	return f.Close()
}

// Entries returns up to limit entries, newest first (all for limit <= 0).
func (l *Log) Entries(limit int) ([]api.AuditEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var all []api.AuditEntry
	if l.Path != "" {
		for _, p := range []string{l.Path + ".1", l.Path} {
			es, err := readFile(p)
			if err != nil {
				return nil, err
			}
			all = append(all, es...)
		}
	}
	all = append(all, l.memory...)
	slices.SortStableFunc(all, func(a, b api.AuditEntry) int { return b.Time.Compare(a.Time) })
	if limit > 0 && len(all) > limit {
		all = all[:limit]
	}
	return all, nil
}

func readFile(path string) ([]api.AuditEntry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	var out []api.AuditEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e api.AuditEntry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e) // a torn line (power cut mid-write) is skipped
		}
	}
	return out, nil
}

// Routes registers GET /api/v1/audit.
func (l *Log) Routes(mux api.Mux) {
	mux.Handle("GET /api/v1/audit", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := 200
		if q := r.URL.Query().Get("limit"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil || n < 1 || n > 10000 {
				api.WriteError(w, http.StatusBadRequest, "limit must be a whole number from 1 to 10000")
				return
			}
			limit = n
		}
		es, err := l.Entries(limit)
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, "the audit log could not be read ("+err.Error()+"); check the data partition in the status")
			return
		}
		api.WriteJSON(w, http.StatusOK, api.AuditLog{Entries: append([]api.AuditEntry{}, es...)})
	}))
}
