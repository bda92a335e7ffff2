// Package checks holds the probes and the scheduler that runs this
// observer's checks.
//
// Each probe kind lives in its own file and registers a constructor for its
// kind name; New builds a Prober for a check from that registry.
package checks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bftmon/bftmon/app/types"
)

// MaxOutput bounds the length in bytes of a probe's output.
const MaxOutput = 256

// DefaultTimeout bounds a probe whose check sets no timeout.
const DefaultTimeout = 5 * time.Second

// Result is the outcome of one probe.
type Result struct {
	// Status is passing, warning, critical, or unknown when the probe could
	// not tell (it could not be built, or its caller gave up on it).
	Status types.Status
	// Output is one short line (at most MaxOutput bytes) saying what was seen.
	Output string
	// Latency is how long the target took to answer (or to fail).
	Latency time.Duration
	// Perf is the performance data of a Nagios plugin (exec checks).
	Perf []Perf
}

// Prober probes one check's target. A probe never fails with an error: a
// failure is a status, and the output says why.
type Prober interface {
	Probe(ctx context.Context) Result
}

// kinds maps a kind name to the constructor of its probers.
var kinds = map[string]func(types.Check) (Prober, error){}

// register makes a probe kind known to New; each kind's file calls it from
// init.
func register(kind string, ctor func(types.Check) (Prober, error)) {
	if _, dup := kinds[kind]; dup {
		panic("checks: kind " + kind + " registered twice")
	}
	kinds[kind] = ctor
}

// Kinds lists the known probe kinds, sorted.
func Kinds() []string {
	return slices.Sorted(maps.Keys(kinds))
}

// New builds the prober of a check. It fails for an unknown kind or for
// parameters the kind cannot use.
func New(c types.Check) (Prober, error) {
	ctor, ok := kinds[c.Kind]
	if !ok {
		return nil, fmt.Errorf("check %s: unknown kind %q (known: %s)",
			c.Id, c.Kind, strings.Join(Kinds(), ", "))
	}
	p, err := ctor(c)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", c.Id, err)
	}
	return p, nil
}

// RunOnce builds the prober of a check and probes once. A check that cannot
// be built is unknown, with the reason as output.
func RunOnce(ctx context.Context, c types.Check) Result {
	return proberOf(c).Probe(ctx)
}

// proberOf is New for callers that must always have a prober: a check that
// cannot be built probes as unknown.
func proberOf(c types.Check) Prober {
	p, err := New(c)
	if err != nil {
		return brokenProber{err: err}
	}
	return p
}

// brokenProber stands in for a check whose prober could not be built.
type brokenProber struct{ err error }

func (b brokenProber) Probe(context.Context) Result {
	return result(types.STATUS_UNKNOWN, 0, b.err.Error())
}

// timeoutOf is the probe timeout of a check.
func timeoutOf(c types.Check) time.Duration {
	if c.TimeoutMs <= 0 {
		return DefaultTimeout
	}
	return time.Duration(c.TimeoutMs) * time.Millisecond
}

// timeoutError is the cause of a probe's context ending at the probe's own
// timeout.
type timeoutError time.Duration

func (e timeoutError) Error() string {
	return "timeout after " + time.Duration(e).String()
}

// withTimeout bounds a probe's context by its timeout; failure recognises
// the timeout by its cause.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, timeoutError(d))
}

// failure is the result of a probe of what that failed with err after lat.
// Reaching the probe's own timeout is reported as a timeout rather than as
// the error it caused; a probe ended from outside (the caller cancelled or
// its deadline passed first) is unknown, since it says nothing about the
// target.
func failure(ctx context.Context, lat time.Duration, what string, err error) Result {
	// A connection deadline taken from ctx may fire a moment before ctx
	// itself does: a timeout at the deadline is the probe's timeout.
	var ne net.Error
	if dl, ok := ctx.Deadline(); ok && errors.As(err, &ne) && ne.Timeout() && time.Until(dl) < time.Millisecond {
		<-ctx.Done()
	}
	cause := context.Cause(ctx)
	var timeout timeoutError
	switch {
	case errors.As(cause, &timeout):
		return result(types.STATUS_CRITICAL, lat, what+": "+timeout.Error())
	case cause != nil:
		return result(types.STATUS_UNKNOWN, lat, what+": probe ended early: "+cause.Error())
	default:
		return result(types.STATUS_CRITICAL, lat, what+": "+err.Error())
	}
}

// result builds a Result whose output is cut to one line of at most
// MaxOutput bytes of valid UTF-8.
func result(st types.Status, lat time.Duration, output string) Result {
	return Result{Status: st, Output: clip(output), Latency: lat}
}

// clip makes s one line of at most MaxOutput bytes of valid UTF-8.
func clip(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= MaxOutput {
		return s
	}
	const ellipsis = "…"
	cut := MaxOutput - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}
