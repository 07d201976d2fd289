package apps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"keel.dev/keel/image/appspec"
)

// waitHealthy runs r's health check every interval until it passes, or
// says why it did not within the spec's timeout.
func (m *Manager) waitHealthy(ctx context.Context, r *runner) error {
	h := r.spec.Health
	timeout, interval := h.Timeout.D(), h.Interval.D()
	deadline := time.Now().Add(timeout)
	// last is the last attempt's error; ended, that of the last attempt
	// the window's end did not cut off.
	var last, ended error
	for {
		actx, cancel := context.WithDeadline(ctx, deadline)
		err := m.checkOnce(actx, r)
		cutOff := errors.Is(err, errNotInTime) && actx.Err() != nil
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the install was cancelled: %w", ctx.Err())
		}
		last = err
		if !cutOff {
			ended = err
		}
		if time.Now().Add(interval).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the install was cancelled: %w", ctx.Err())
		case <-time.After(interval):
		}
	}
	// An attempt the window's end cut off says less than one that failed
	// on its own: a slow box may start the last attempt just before the
	// end, and the operator wants the check's own words.
	if ended != nil {
		last = ended
	}
	msg := fmt.Sprintf("it did not pass within %v: %v", timeout, last)
	if _, _, exit := r.running(); exit != "" {
		r.mu.Lock()
		n := r.restarts
		r.mu.Unlock()
		msg += fmt.Sprintf("; the application exited %d times, last with %s", n, exit)
	}
	return errors.New(msg)
}

// errNotInTime is a health command that had to be killed.
var errNotInTime = errors.New("did not finish in time")

// checkOnce runs one attempt of the health check.
func (m *Manager) checkOnce(ctx context.Context, r *runner) error {
	h := r.spec.Health
	switch {
	case h.HTTP != nil:
		return httpCheck(ctx, h)
	case len(h.Command) > 0:
		return m.commandCheck(ctx, r)
	}
	// No check: healthy once the process has kept running an interval.
	pid, since, exit := r.running()
	switch {
	case pid == 0 && exit != "":
		return fmt.Errorf("the application is not running (%s)", exit)
	case pid == 0:
		return errors.New("the application has not started")
	case time.Since(since) < h.Interval.D():
		return errors.New("the application has only just started")
	}
	return nil
}

// httpCheck runs the spec's HTTP health check, h.HTTP: it passes when
// the answer has the expected status.
func httpCheck(ctx context.Context, h appspec.Health) error {
	url := fmt.Sprintf("http://127.0.0.1:%d%s", h.HTTP.Port, h.HTTP.Path)
	c := &http.Client{
		Timeout:   min(max(h.Interval.D(), 2*time.Second), 10*time.Second),
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// A redirect is an answer, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		// *url.Error repeats the method and URL.
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	if expect := h.HTTP.ExpectStatus; resp.StatusCode != expect {
		return fmt.Errorf("GET %s answered %s, not %d", url, resp.Status, expect)
	}
	return nil
}

// commandCheck runs the spec's health command as the application's user;
// it passes when the command exits 0.
func (m *Manager) commandCheck(ctx context.Context, r *runner) error {
	ctx, cancel := context.WithTimeout(ctx, min(max(r.spec.Health.Interval.D(), 5*time.Second), 30*time.Second))
	defer cancel()
	c := r.spec.Health.Command
	cmd := m.command(ctx, r, c[0], c[1:], false)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	err := cmd.Run()
	if err == nil {
		return nil
	}
	what := errors.New(exitString(err))
	// A check that exited on its own says why, even when the deadline
	// passed while it did; only one that had to be killed ran out of time.
	var ee *exec.ExitError
	if exited := errors.As(err, &ee) && ee.Exited(); ctx.Err() != nil && !exited {
		what = errNotInTime
	}
	first, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
	if len(first) > 200 {
		first = first[:200] + "…"
	}
	if first != "" {
		return fmt.Errorf("%s: %w: %s", strings.Join(c, " "), what, first)
	}
	return fmt.Errorf("%s: %w", strings.Join(c, " "), what)
}
