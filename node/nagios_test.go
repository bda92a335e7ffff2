package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// pluginDir is where Debian's monitoring-plugins-basic installs the Nagios
// plugins (.ci/run installs them).
const pluginDir = "/usr/lib/nagios/plugins"

func plugin(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(pluginDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Nagios plugin %s: %v (apt-get install monitoring-plugins-basic; .ci/run does)", name, err)
	}
	return p
}

func execCheck(id string, timeoutMs int64, argv ...string) types.Check {
	return types.Check{Id: id, Kind: "exec", Exec: &types.ExecParams{Argv: argv}, IntervalMs: 1000, TimeoutMs: timeoutMs, TtlMs: 3000}
}

// checksOf returns the checks of service/instance by id.
func checksOf(ctx context.Context, c *api.Client, service string) (map[string]api.Check, error) {
	insts, _, err := c.Service(ctx, service, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]api.Check{}
	for _, in := range insts {
		for _, ch := range in.Checks {
			out[ch.ID] = ch
		}
	}
	return out, nil
}

// TestRealNagiosPlugins runs Debian's Nagios plugins as exec checks on a real
// node: each exit code becomes its status, the output is the first line, the
// performance data reaches /metrics, and a plugin that hangs is killed at
// its timeout together with its children. A passive check takes a submitted
// result and goes stale at its ttl.
func TestRealNagiosPlugins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	defer tn.node.Stop()

	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "fine") }))
	defer web.Close()
	webHost, webPort, _ := net.SplitHostPort(web.Listener.Addr().String())
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closedPort, _ := net.SplitHostPort(closed.Addr().String())
	closed.Close()

	// A plugin that starts a child and hangs; the child's pid is written
	// down so the test can see it killed.
	dir := t.TempDir()
	childPid := filepath.Join(dir, "child.pid")
	hang := filepath.Join(dir, "check_hang")
	script := "#!/bin/sh\nsleep 600 &\necho $! > " + childPid + "\nwait\n"
	if err := os.WriteFile(hang, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "check_garbage")
	if err := os.WriteFile(garbage, []byte("#!/bin/sh\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	dummy := plugin(t, "check_dummy")
	inst := types.ServiceInstance{Name: "nag", Id: "nag-1", Address: "127.0.0.1", Checks: []types.Check{
		execCheck("ok", 1000, dummy, "0", "all fine"),
		execCheck("warn", 1000, dummy, "1", "disk 91%"),
		execCheck("crit", 1000, dummy, "2", "disk full"),
		execCheck("unknown", 1000, dummy, "3", "cannot tell"),
		execCheck("tcp", 1000, plugin(t, "check_tcp"), "-H", webHost, "-p", webPort),
		execCheck("tcp-down", 1000, plugin(t, "check_tcp"), "-H", "127.0.0.1", "-p", closedPort),
		execCheck("http", 1000, plugin(t, "check_http"), "-H", webHost, "-p", webPort, "-u", "/", "-s", "fine"),
		execCheck("hang", 500, hang),
		execCheck("garbage", 1000, garbage),
		execCheck("missing", 1000, filepath.Join(dir, "check_nothing")),
		{Id: "backup", Kind: "passive", TtlMs: 2000},
	}}
	// A check that no observer could ever decide is refused, saying why.
	elsewhere := inst
	elsewhere.Checks = []types.Check{{Id: "elsewhere", Kind: "passive", TtlMs: 2000, Datacenters: []string{"dc9"}}}
	if res, err := tn.client.Register(ctx, tn.operator.Private, elsewhere); res.Code != uint32(app.CodeInvalid) || err == nil || !strings.Contains(err.Error(), "holds weight 0 of 1, and a verdict needs 1") {
		t.Fatalf("a check scoped to a datacenter without observers: %+v %v", res, err)
	}
	if _, err := tn.client.Register(ctx, tn.operator.Private, inst); err != nil {
		t.Fatal(err)
	}

	want := map[string]struct{ status, output string }{
		"ok":       {"passing", "all fine"},
		"warn":     {"warning", "disk 91%"},
		"crit":     {"critical", "disk full"},
		"unknown":  {"unknown", "cannot tell"},
		"tcp":      {"passing", "TCP OK"},
		"tcp-down": {"critical", "Connection refused"},
		"http":     {"passing", "HTTP OK"},
		"hang":     {"critical", "killed: timeout after 500ms"},
		"garbage":  {"unknown", "printed nothing (exit 7)"},
		"missing":  {"unknown", "no such file"},
	}
	var last map[string]api.Check
	waitFor(t, "every plugin's agreed status", 60*time.Second, func() (bool, error) {
		var err error
		if last, err = checksOf(ctx, tn.client, "nag"); err != nil {
			return false, err
		}
		for id, w := range want {
			ch := last[id]
			if ch.HardStatus != w.status || len(ch.Observers) != 1 || !strings.Contains(ch.Observers[0].Output, w.output) {
				return false, fmt.Errorf("check %s: %s %+v, want %s with %q", id, ch.HardStatus, ch.Observers, w.status, w.output)
			}
		}
		return true, nil
	})
	if out := last["tcp"].Observers[0].Output; strings.Contains(out, "|") {
		t.Fatalf("performance data must be cut from the output: %q", out)
	}

	// The hanging plugin's child died with it. On a loaded machine a run
	// can be killed before the script wrote the pid down: a later run does.
	var bz []byte
	waitFor(t, "the hanging plugin to write its child's pid", 30*time.Second, func() (bool, error) {
		var err error
		bz, err = os.ReadFile(childPid)
		return err == nil && len(strings.TrimSpace(string(bz))) > 0, err
	})
	pid, err := strconv.Atoi(strings.TrimSpace(string(bz)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the hanging plugin's child to be killed", 10*time.Second, func() (bool, error) {
		err := syscall.Kill(pid, 0)
		return errors.Is(err, syscall.ESRCH), err
	})

	// Performance data per check and observer on /metrics.
	waitFor(t, "perfdata on /metrics", 20*time.Second, func() (bool, error) {
		m, err := get("http://" + tn.httpAddr + "/metrics")
		if err != nil {
			return false, err
		}
		for _, series := range []string{
			`bftmon_check_perfdata{check="tcp",instance="nag-1",label="time",observer="`,
			`bftmon_check_perfdata{check="http",instance="nag-1",label="size",observer="`,
			`bftmon_probe_status{check="crit",instance="nag-1",observer="`,
			`bftmon_probe_lateness_seconds_count `,
			`bftmon_observations_committed_total `,
			`bftmon_txs_total{code="0"} `,
		} {
			if !strings.Contains(m, series) {
				return false, fmt.Errorf("no series %s in /metrics", series)
			}
		}
		return true, nil
	})

	// A passive result becomes the agreed status, then goes stale at its ttl.
	if _, err := tn.client.Observe(ctx, tn.token, api.PassiveResult{Service: "nag", Instance: "nag-1", Check: "ok", Code: 2}); !errors.Is(err, api.ErrBadRequest) || !strings.Contains(err.Error(), "only passive checks take submitted results") {
		t.Fatalf("a result for a probed check: %v", err)
	}
	if _, err := tn.client.Observe(ctx, tn.token, api.PassiveResult{Service: "nag", Instance: "nag-2", Check: "backup", Code: 2}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("a result for an unknown instance: %v", err)
	}
	ack, err := tn.client.Observe(ctx, tn.token, api.PassiveResult{Service: "nag", Instance: "nag-1", Check: "backup", Code: 1, Output: "backup is 26h old | age=26h;24;48"})
	if err != nil || ack.Status != "warning" {
		t.Fatalf("observe: %+v %v", ack, err)
	}
	waitFor(t, "the passive result agreed", 20*time.Second, func() (bool, error) {
		cs, err := checksOf(ctx, tn.client, "nag")
		ch := cs["backup"]
		return err == nil && ch.Status == "warning" && len(ch.Observers) == 1 && ch.Observers[0].Output == "backup is 26h old", err
	})
	waitFor(t, "the passive result going stale", 20*time.Second, func() (bool, error) {
		cs, err := checksOf(ctx, tn.client, "nag")
		return err == nil && cs["backup"].Status == "stale", err
	})
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	bz, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return string(bz), err
}
