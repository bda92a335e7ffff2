package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
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

// TestScaleBench runs the scaling benchmark small on a one-node network of
// the real binary: the generator's reports commit, every check is passing
// after the warm-up, and the table has the row.
func TestScaleBench(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node: skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "bftmon")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/bftmon").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var out bytes.Buffer
	err := Scale(context.Background(), &out, ScaleConfig{Self: bin, Nodes: []int{1}, Checks: []int{130}, Interval: 2 * time.Second, Duration: 3 * time.Second})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var row string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "| 1 | 130 | ") {
			row = l
		}
	}
	f := strings.Split(row, " | ")
	if len(f) != 10 {
		t.Fatalf("no row for 1 node, 130 checks:\n%s", out.String())
	}
	if committed, _ := strconv.ParseFloat(f[3], 64); committed <= 0 {
		t.Errorf("nothing committed: %s", row)
	}
	if !strings.HasSuffix(row, " | 0 | 0 |") {
		t.Errorf("checks not passing at the end, or alerts while measuring: %s\n%s", row, out.String())
	}
}
