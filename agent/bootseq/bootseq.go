// Package bootseq runs the boot sequence as a list of phases, each naming
// what it needs and what it provides (Talos runs a phase's tasks the same
// way). A phase starts once every resource it needs is settled, so phases
// that do not depend on each other run at the same time. A resource is
// settled when its provider ended, well or not: a phase that needs the
// data partition still runs when mounting it failed, and decides itself
// what it can do without it (recovery mode). A phase that panics has
// failed; the others go on.
package bootseq

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Resource is something a phase provides and others need: a mounted
// partition, a loaded configuration, a running service.
type Resource string

// Phase is one step of the sequence.
type Phase struct {
	Name     string
	Needs    []Resource
	Provides []Resource
	Run      func(ctx context.Context) error
}

// Result is how a phase went.
type Result struct {
	Phase string
	Err   error
	Start time.Duration // since the sequence started
	Took  time.Duration
}

// Check validates a sequence: every resource needed is provided by
// exactly one phase, and no phase waits for itself through others.
func Check(phases []Phase) error {
	by := map[Resource]string{}
	for _, p := range phases {
		for _, r := range p.Provides {
			if q, ok := by[r]; ok {
				return fmt.Errorf("boot sequence: %s is provided by both %s and %s", r, q, p.Name)
			}
			by[r] = p.Name
		}
	}
	deps := map[string][]string{}
	for _, p := range phases {
		for _, r := range p.Needs {
			q, ok := by[r]
			if !ok {
				return fmt.Errorf("boot sequence: %s needs %s, which no phase provides", p.Name, r)
			}
			deps[p.Name] = append(deps[p.Name], q)
		}
	}
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(n string, path []string) error
	visit = func(n string, path []string) error {
		switch state[n] {
		case 1:
			return fmt.Errorf("boot sequence: a cycle: %v", append(path, n))
		case 2:
			return nil
		}
		state[n] = 1
		for _, d := range deps[n] {
			if err := visit(d, append(path, n)); err != nil {
				return err
			}
		}
		state[n] = 2
		return nil
	}
	for _, p := range phases {
		if err := visit(p.Name, nil); err != nil {
			return err
		}
	}
	return nil
}

// Run runs the phases, each as soon as what it needs is settled, and
// returns every phase's result in the order they ended. done, when not
// nil, is called as each phase ends (from the phase's goroutine; it must
// be safe for concurrent use): the agent logs there and pets its watchdog.
// An invalid sequence runs nothing and returns Check's error.
func Run(ctx context.Context, phases []Phase, done func(Result)) ([]Result, error) {
	if err := Check(phases); err != nil {
		return nil, err
	}
	settled := map[Resource]chan struct{}{}
	for _, p := range phases {
		for _, r := range p.Provides {
			settled[r] = make(chan struct{})
		}
	}
	start := time.Now()
	var (
		mu      sync.Mutex
		results []Result
		wg      sync.WaitGroup
	)
	for _, p := range phases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, r := range p.Needs {
				<-settled[r]
			}
			began := time.Now()
			err := run(ctx, p)
			res := Result{Phase: p.Name, Err: err, Start: began.Sub(start), Took: time.Since(began)}
			mu.Lock()
			results = append(results, res)
			mu.Unlock()
			if done != nil {
				done(res)
			}
			for _, r := range p.Provides {
				close(settled[r])
			}
		}()
	}
	wg.Wait()
	return slices.Clip(results), nil
}

// run runs one phase; a panic is its error.
func run(ctx context.Context, p Phase) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("phase %s panicked: %v\n%s", p.Name, r, debug.Stack())
		}
	}()
	return p.Run(ctx)
}
