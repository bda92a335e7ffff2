package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
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

// TestKVBench runs the key/value benchmark briefly on bftmon's one-node
// network and, if Debian's etcd-server is installed, on etcd alone: every
// workload commits and the table has a row per system and concurrency.
func TestKVBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node: skipped with -short")
	}
	systems := []string{"bftmon-1"}
	etcd, err := exec.LookPath("etcd")
	if err == nil {
		systems = append(systems, "etcd-1")
	} else {
		t.Log("no etcd on PATH (apt-get install etcd-server): bftmon only")
	}
	var out bytes.Buffer
	err = KV(context.Background(), &out, KVConfig{Etcd: etcd, Clients: []int{2}, Batch: 4, Duration: 1200 * time.Millisecond, Systems: systems})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, sys := range systems {
		if !strings.Contains(out.String(), "| "+sys+" | 2 | ") {
			t.Fatalf("no row for %s:\n%s", sys, out.String())
		}
	}
	if strings.Contains(out.String(), "| 0 |") {
		t.Fatalf("a workload committed nothing:\n%s", out.String())
	}
}
