// Package supervisor runs the agent's long-lived services: a service that
// returns or panics is restarted with exponential backoff, and none of them
// can take PID 1 down.
package supervisor

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// Service is one supervised service. Run blocks until ctx is done or the
// service fails.
type Service struct {
	Name string
	Run  func(ctx context.Context) error
}

// Supervisor starts services and waits for them on Stop.
type Supervisor struct {
	Log        *slog.Logger
	MinBackoff time.Duration // default 500 ms
	MaxBackoff time.Duration // default 30 s
	wg         sync.WaitGroup
}

// Start runs svc until ctx is cancelled.
func (s *Supervisor) Start(ctx context.Context, svc Service) {
	min, max := s.MinBackoff, s.MaxBackoff
	if min == 0 {
		min = 500 * time.Millisecond
	}
	if max == 0 {
		max = 30 * time.Second
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		backoff := min
		for {
			start := time.Now()
			err := runOnce(ctx, svc)
			if ctx.Err() != nil {
				return
			}
			// A service that ran a good while before failing starts over
			// with a short delay; a crash loop backs off.
			if time.Since(start) > max {
				backoff = min
			}
			s.Log.Error("service stopped; restarting", "service", svc.Name, "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min2(backoff*2, max)
		}
	}()
}

// Wait blocks until every service has returned after ctx's cancellation, or
// timeout passes.
func (s *Supervisor) Wait(timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func runOnce(ctx context.Context, svc Service) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	if err := svc.Run(ctx); err != nil {
		return err
	}
	return fmt.Errorf("service returned")
}

func min2(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
