package bootseq

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOrderConcurrencyFailuresAndPanics(t *testing.T) {
	var mu sync.Mutex
	var order []string
	mark := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	// b and c need only a, so they run together: each waits for the other
	// to have started.
	bStarted, cStarted := make(chan struct{}), make(chan struct{})
	phases := []Phase{
		{Name: "d", Needs: []Resource{"b", "c"}, Provides: []Resource{"d"}, Run: func(context.Context) error { mark("d"); return nil }},
		{Name: "a", Provides: []Resource{"a"}, Run: func(context.Context) error { mark("a"); return nil }},
		{Name: "b", Needs: []Resource{"a"}, Provides: []Resource{"b"}, Run: func(context.Context) error {
			close(bStarted)
			select {
			case <-cStarted:
			case <-time.After(5 * time.Second):
				return errors.New("c did not run beside b")
			}
			mark("b")
			return errors.New("b failed")
		}},
		{Name: "c", Needs: []Resource{"a"}, Provides: []Resource{"c"}, Run: func(context.Context) error {
			close(cStarted)
			<-bStarted
			mark("c")
			panic("c broke")
		}},
	}
	var dones int
	res, err := Run(context.Background(), phases, func(Result) { mu.Lock(); dones++; mu.Unlock() })
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 || dones != 4 {
		t.Fatalf("%d results, %d calls", len(res), dones)
	}
	if order[0] != "a" || order[3] != "d" {
		t.Errorf("order %v", order)
	}
	errs := map[string]error{}
	for _, r := range res {
		errs[r.Phase] = r.Err
	}
	if errs["b"] == nil || errs["b"].Error() != "b failed" {
		t.Errorf("b: %v", errs["b"])
	}
	if errs["c"] == nil || !strings.Contains(errs["c"].Error(), "phase c panicked: c broke") {
		t.Errorf("c: %v", errs["c"])
	}
	if errs["d"] != nil {
		t.Errorf("d, after a failure and a panic: %v", errs["d"])
	}
}

func TestCheck(t *testing.T) {
	noop := func(context.Context) error { return nil }
	for _, c := range []struct {
		phases []Phase
		want   string
	}{
		{[]Phase{{Name: "x", Needs: []Resource{"y"}, Run: noop}}, "x needs y, which no phase provides"},
		{[]Phase{{Name: "x", Provides: []Resource{"r"}, Run: noop}, {Name: "y", Provides: []Resource{"r"}, Run: noop}}, "r is provided by both x and y"},
		{[]Phase{{Name: "x", Needs: []Resource{"b"}, Provides: []Resource{"a"}, Run: noop}, {Name: "y", Needs: []Resource{"a"}, Provides: []Resource{"b"}, Run: noop}}, "a cycle"},
	} {
		err := Check(c.phases)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want %q", err, c.want)
		}
		if _, err := Run(context.Background(), c.phases, nil); err == nil {
			t.Error("Run ran an invalid sequence")
		}
	}
}
