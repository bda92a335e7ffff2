package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestObserverBench runs the observer benchmark small: every check probes a
// real local server and passes, and the report has its figures.
func TestObserverBench(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	go ServeTargets(ctx, pw)
	var tg Targets
	if _, err := fmt.Fscanf(pr, "http=%s tcp=%s\n", &tg.HTTP, &tg.TCP); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := Observer(ctx, &out, &tg, ObserverConfig{Checks: 20, Interval: time.Second, Duration: 2 * time.Second, MaxConcurrent: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{", 0 not passing", "skipped runs  ", "lateness      p50 ", "CPU ", "RSS "} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "probes        0 ") {
		t.Fatalf("no probes ran:\n%s", out.String())
	}
}
