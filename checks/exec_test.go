package checks

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// plugin writes an executable shell script and returns its path.
func plugin(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "check_test")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func execCheck(timeoutMs int64, argv ...string) types.Check {
	return types.Check{Id: "x", Kind: "exec", Exec: &types.ExecParams{Argv: argv}, IntervalMs: 10000, TimeoutMs: timeoutMs}
}

func TestExecExitCodes(t *testing.T) {
	cases := []struct {
		body   string
		want   types.Status
		output string
	}{
		{"echo 'OK - all fine | load=0.5;1;2;0; users=3'; exit 0", types.STATUS_PASSING, "OK - all fine"},
		{"echo 'WARNING - high'; exit 1", types.STATUS_WARNING, "WARNING - high"},
		{"echo 'CRITICAL - down'; exit 2", types.STATUS_CRITICAL, "CRITICAL - down"},
		{"echo 'UNKNOWN - no idea'; exit 3", types.STATUS_UNKNOWN, "UNKNOWN - no idea"},
		{"echo 'weird'; exit 7", types.STATUS_UNKNOWN, "exited 7"},
		{"exit 0", types.STATUS_UNKNOWN, "printed nothing"},
		{"printf '\\377\\376 binary\\n'; exit 2", types.STATUS_CRITICAL, "binary"},
	}
	for _, tc := range cases {
		t.Run(tc.output, func(t *testing.T) {
			r := RunOnce(context.Background(), execCheck(5000, plugin(t, tc.body)))
			if r.Status != tc.want || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status.Name(), r.Output, tc.want.Name(), tc.output)
			}
		})
	}
}

func TestExecPerfdata(t *testing.T) {
	r := RunOnce(context.Background(), execCheck(5000, plugin(t, `echo "DISK OK | '/ root'=42.5%;80;90;0;100 inodes=U"
echo "long line 1"
echo "long line 2 | 'it''s'=3s;;;0"
echo "time=0.002s;;;0.000000 size=1024B;;;0"`)))
	if r.Status != types.STATUS_PASSING || r.Output != "DISK OK" {
		t.Fatalf("got %s %q", r.Status.Name(), r.Output)
	}
	want := []Perf{
		{Label: "/ root", Value: 42.5, Known: true, UOM: "%", Warn: "80", Crit: "90", Min: "0", Max: "100"},
		{Label: "inodes"},
		{Label: "it's", Value: 3, Known: true, UOM: "s", Min: "0"},
		{Label: "time", Value: 0.002, Known: true, UOM: "s", Min: "0.000000"},
		{Label: "size", Value: 1024, Known: true, UOM: "B", Min: "0"},
	}
	if len(r.Perf) != len(want) {
		t.Fatalf("perf = %+v, want %+v", r.Perf, want)
	}
	for i := range want {
		if r.Perf[i] != want[i] {
			t.Errorf("perf[%d] = %+v, want %+v", i, r.Perf[i], want[i])
		}
	}
	po := ParsePluginOutput("OK | good=1 bad=x 'open=2")
	if len(po.Perf) != 1 || len(po.Errors) != 2 {
		t.Fatalf("garbage perfdata: %+v", po)
	}
}

func TestExecBadPlugin(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "plain")
	os.WriteFile(notExec, []byte("#!/bin/sh\necho hi\n"), 0o644)
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{notExec, "not executable"},
		{dir, "not executable"},
	} {
		r := RunOnce(context.Background(), execCheck(1000, tc.path))
		if r.Status != types.STATUS_UNKNOWN || !strings.Contains(r.Output, tc.want) {
			t.Errorf("%s: got %s %q, want unknown containing %q", tc.path, r.Status.Name(), r.Output, tc.want)
		}
	}
}

// TestExecTimeoutKillsTheGroup: a plugin that hangs is killed at its timeout
// together with the child it started, and reported critical (or the
// configured timeout status).
func TestExecTimeoutKillsTheGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	p := plugin(t, "sleep 300 &\necho $! > "+pidFile+"\nsleep 300")
	r := RunOnce(context.Background(), execCheck(300, p))
	if r.Status != types.STATUS_CRITICAL || !strings.Contains(r.Output, "killed: timeout after 300ms") {
		t.Fatalf("got %s %q", r.Status.Name(), r.Output)
	}
	bz, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(bz)))
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the plugin's child %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}

	c := execCheck(200, plugin(t, "sleep 300"))
	c.Exec.TimeoutStatus = types.STATUS_UNKNOWN
	if r := RunOnce(context.Background(), c); r.Status != types.STATUS_UNKNOWN {
		t.Fatalf("timeout_status unknown: got %s", r.Status.Name())
	}
}

// alive tells whether pid is a live (not zombie) process.
func alive(pid int) bool {
	bz, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(bz[strings.LastIndexByte(string(bz), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
