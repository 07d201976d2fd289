package supervisor

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

func TestRestartsFailingAndPanickingServices(t *testing.T) {
	s := &Supervisor{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	var runs atomic.Int32
	s.Start(ctx, Service{Name: "flaky", Run: func(ctx context.Context) error {
		if runs.Add(1)%2 == 0 {
			panic("boom")
		}
		return nil
	}})
	deadline := time.Now().Add(5 * time.Second)
	for runs.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if !s.Wait(time.Second) {
		t.Fatal("services did not stop after cancel")
	}
	if runs.Load() < 5 {
		t.Fatalf("service ran %d times, want restarts", runs.Load())
	}
}
