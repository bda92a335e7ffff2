package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("exec", newExec)
}

// MaxPluginOutput caps what is read of a plugin's output, as Nagios does.
const MaxPluginOutput = 4096

// execProber runs a Nagios plugin: exit code 0..3 is passing, warning,
// critical, unknown; the first line is the output; performance data is
// parsed per the plugin guidelines.
type execProber struct {
	argv          []string
	timeout       time.Duration
	timeoutStatus types.Status
}

func newExec(c types.Check) (Prober, error) {
	if c.Exec == nil || len(c.Exec.Argv) == 0 {
		return nil, errors.New("exec: no argv")
	}
	ts := c.Exec.TimeoutStatus
	if ts == types.STATUS_NONE {
		ts = types.STATUS_CRITICAL
	}
	return &execProber{argv: c.Exec.Argv, timeout: timeoutOf(c), timeoutStatus: ts}, nil
}

// Probe runs the plugin in its own process group, so that on timeout the
// plugin and every child it started are killed together.
func (e *execProber) Probe(ctx context.Context) Result {
	what := e.argv[0]
	if fi, err := os.Stat(what); err != nil {
		return result(types.STATUS_UNKNOWN, 0, fmt.Sprintf("plugin %s: %v", what, err))
	} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return result(types.STATUS_UNKNOWN, 0, fmt.Sprintf("plugin %s is not executable", what))
	}
	ctx, cancel := withTimeout(ctx, e.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.argv[0], e.argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second // children holding the pipes do not hold us
	out := &capped{max: MaxPluginOutput}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Run()
	lat := time.Since(start)
	if cause := context.Cause(ctx); cause != nil {
		// Make sure the whole group is gone even if the leader exited.
		if cmd.Process != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		var timeout timeoutError
		if errors.As(cause, &timeout) {
			return result(e.timeoutStatus, lat, fmt.Sprintf("plugin %s killed: %s", what, timeout.Error()))
		}
		return result(types.STATUS_UNKNOWN, lat, fmt.Sprintf("plugin %s: probe ended early: %v", what, cause))
	}
	var exitErr *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		return result(types.STATUS_UNKNOWN, lat, fmt.Sprintf("plugin %s: %v", what, err))
	}
	po := ParsePluginOutput(out.String())
	text := po.Text
	if text == "" {
		text = fmt.Sprintf("plugin %s printed nothing (exit %d)", what, code)
		if code >= 0 && code <= 3 {
			code = 3 // no output is a plugin error
		}
	}
	if code < 0 || code > 3 {
		text = fmt.Sprintf("plugin %s exited %d (not a plugin status): %s", what, code, text)
	}
	r := result(types.FromExitCode(code), lat, text)
	r.Perf = po.Perf
	return r
}

// capped keeps the first max bytes written to it and discards the rest.
type capped struct {
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.buf.String() }

var _ io.Writer = (*capped)(nil)
