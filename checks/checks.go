// Package checks holds the probes an observer runs (one file per kind, each
// registered by name) and the scheduler that runs this observer's checks and
// hands their results to a submitter in batches.
package checks

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// MaxOutput caps a probe's output line.
const MaxOutput = 256

// Result is the outcome of one probe.
type Result struct {
	Status  types.Status
	Output  string
	Latency time.Duration
}

// Prober runs one check once. It never fails: a failure is a status with an
// output saying why.
type Prober interface {
	Probe(ctx context.Context) Result
}

var kinds = map[string]func(types.Check) (Prober, error){}

// register adds a probe kind; each kind's file calls it from init.
func register(kind string, ctor func(types.Check) (Prober, error)) { kinds[kind] = ctor }

// Kinds lists the known probe kinds.
func Kinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// New builds the prober of a check.
func New(c types.Check) (Prober, error) {
	ctor, ok := kinds[c.Kind]
	if !ok {
		return nil, fmt.Errorf("check %s: unknown kind %q (known: %s)", c.Id, c.Kind, strings.Join(Kinds(), ", "))
	}
	p, err := ctor(c)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", c.Id, err)
	}
	return p, nil
}

// RunOnce builds the prober of c and probes once; a check that cannot be
// built is reported unknown with the reason.
func RunOnce(ctx context.Context, c types.Check) Result {
	p, err := New(c)
	if err != nil {
		return Result{Status: types.STATUS_UNKNOWN, Output: clip(err.Error())}
	}
	return p.Probe(ctx)
}

func timeout(c types.Check) time.Duration {
	if c.TimeoutMs > 0 {
		return time.Duration(c.TimeoutMs) * time.Millisecond
	}
	return 5 * time.Second
}

func clip(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > MaxOutput {
		s = s[:MaxOutput]
	}
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }
