// Package bench measures bftmon on this machine and prints its figures:
// an observer's scheduler under thousands of checks, and the observations a
// one-node network commits per second. `bftmon bench` runs it.
package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// Targets are the local servers the checks of a benchmark probe, run in a
// child process so that their CPU is not counted as the observer's.
type Targets struct {
	HTTP, TCP string // host:port
	cmd       *exec.Cmd
}

// StartTargets runs `self serveArgs...`, which must call ServeTargets, and
// reads the addresses it prints.
func StartTargets(ctx context.Context, self string, serveArgs ...string) (*Targets, error) {
	cmd := exec.CommandContext(ctx, self, serveArgs...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start target servers: %w", err)
	}
	t := &Targets{cmd: cmd}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("target servers: read addresses: %w", err)
	}
	if _, err := fmt.Sscanf(line, "http=%s tcp=%s", &t.HTTP, &t.TCP); err != nil {
		t.Close()
		return nil, fmt.Errorf("target servers printed %q: %w", line, err)
	}
	return t, nil
}

// Close stops the target servers.
func (t *Targets) Close() {
	if t.cmd == nil {
		return
	}
	_ = t.cmd.Process.Kill()
	_ = t.cmd.Wait()
}

// ServeTargets serves an HTTP server answering 200 on every path and a TCP
// listener accepting and closing connections, prints their addresses, and
// serves until ctx ends.
func ServeTargets(ctx context.Context, w io.Writer) error {
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") }),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(hl)
	fmt.Fprintf(w, "http=%s tcp=%s\n", hl.Addr(), tl.Addr())
	<-ctx.Done()
	return srv.Close()
}

// Checks makes n checks, half http and half tcp, against the targets, at
// interval with timeout 5s (or the interval, if shorter).
func (t *Targets) Checks(n int, interval time.Duration) []types.Check {
	out := make([]types.Check, n)
	timeout := min(5*time.Second, interval)
	for i := range out {
		c := types.Check{Id: fmt.Sprintf("c%05d", i), IntervalMs: interval.Milliseconds(), TimeoutMs: timeout.Milliseconds(), TtlMs: 3 * interval.Milliseconds()}
		if i%2 == 0 {
			c.Kind, c.Http = "http", &types.HTTPParams{Url: fmt.Sprintf("http://%s/c/%d", t.HTTP, i)}
		} else {
			c.Kind, c.Tcp = "tcp", &types.TCPParams{Address: t.TCP}
		}
		out[i] = c
	}
	return out
}

// usage is this process's CPU time and memory.
type usage struct {
	cpu     time.Duration // user + system
	rss     int64         // bytes, now
	peakRSS int64         // bytes, high-water mark
}

func readUsage() usage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	u := usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	if data, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "VmRSS:":
					u.rss = kb << 10
				case "VmHWM:":
					u.peakRSS = kb << 10
				}
			}
		}
	}
	return u
}

// quantile of sorted durations.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// summary is p50/p99/max of ds (sorted in place).
func summary(ds []time.Duration) string {
	slices.Sort(ds)
	if len(ds) == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p99 %s  max %s  (%d samples)",
		quantile(ds, .50).Round(time.Microsecond), quantile(ds, .99).Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond), len(ds))
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
