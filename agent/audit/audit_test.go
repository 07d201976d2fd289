package audit

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"keel.dev/keel/agent/api"
)

func TestLogIsBoundedNewestFirstAndSurvivesATornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l := &Log{Path: path, MaxBytes: 4 << 10}
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for i := range 200 {
		l.Record(api.AuditEntry{Time: t0.Add(time.Duration(i) * time.Second), User: "admin", Client: "192.0.2.1", Action: fmt.Sprintf("PUT /api/v1/x/%d", i), Outcome: "ok"})
	}
	var size int64
	for _, p := range []string{path, path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		size += st.Size()
	}
	if size > 8<<10 {
		t.Fatalf("the log takes %d bytes, bound 8 KiB", size)
	}
	es, err := l.Entries(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) < 20 || es[0].Action != "PUT /api/v1/x/199" || !es[0].Time.After(es[1].Time) {
		t.Fatalf("%d entries, newest %+v", len(es), es[0])
	}
	// A power cut in the middle of a line.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2026-12-04T01:00:00Z","user":"adm`)
	f.Close()
	again, err := (&Log{Path: path}).Entries(5)
	if err != nil || len(again) != 5 || again[0].Action != "PUT /api/v1/x/199" {
		t.Fatalf("after a torn line: %v %+v", err, again)
	}
	// The next entry starts on a line of its own.
	l2 := &Log{Path: path, MaxBytes: 1 << 20}
	l2.Record(api.AuditEntry{Time: t0.Add(time.Hour), User: "ops", Action: "login", Outcome: "ok"})
	if es, _ := l2.Entries(1); len(es) != 1 || es[0].User != "ops" {
		t.Fatalf("entry after the torn line: %+v", es)
	}
}
