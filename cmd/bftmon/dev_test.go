package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/internal/testutil"
)

// freeAddr is shared with the other tests that start real nodes.
var freeAddr = testutil.FreeAddr

// buildBinary builds the real bftmon binary once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "bftmon")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// devRun is a running `bftmon dev` process.
type devRun struct {
	cmd   *exec.Cmd
	lines chan string
	out   bytes.Buffer
}

func startDev(t *testing.T, bin string, args ...string) *devRun {
	t.Helper()
	d := &devRun{cmd: exec.Command(bin, append([]string{"dev"}, args...)...), lines: make(chan string, 1000)}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.cmd.Stderr = &d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			d.cmd.Wait()
		}
	})
	return d
}

// waitLine waits for an output line containing s.
func (d *devRun) waitLine(t *testing.T, s string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-d.lines:
			if !ok {
				t.Fatalf("bftmon dev exited before printing %q; stderr:\n%s", s, d.out.String())
			}
			if strings.Contains(l, s) {
				return l
			}
		case <-deadline:
			t.Fatalf("bftmon dev did not print %q within %s; stderr:\n%s", s, timeout, d.out.String())
		}
	}
}

// stop sends SIGINT and expects a clean exit.
func (d *devRun) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("bftmon dev did not exit cleanly on SIGINT: %v\n%s", err, d.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("bftmon dev did not stop within 30s of SIGINT")
	}
}

// cliRunner runs the real binary's client commands against the node at
// httpAddr with home and env (KEY=VALUE) set, returning their output and
// exit code. BFTMON_OBSERVE_TOKEN is unset unless env sets it.
func cliRunner(t *testing.T, bin, home, httpAddr string, env ...string) func(args ...string) (string, int) {
	return func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "BFTMON_HOME="+home, "BFTMON_ADDR="+httpAddr, "BFTMON_OBSERVE_TOKEN=")
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
}

// TestDev runs the README's first command as a user would: the real binary,
// the demo service turning passing, the printed commands working, breaking
// the demo turning it critical, Ctrl-C, and resuming.
func TestDev(t *testing.T) {
	bin := buildBinary(t)
	home := filepath.Join(t.TempDir(), "home")
	httpAddr, demoAddr := freeAddr(t), freeAddr(t)
	args := []string{"--home", home, "--http", httpAddr, "--demo-addr", demoAddr,
		"--rpc", "tcp://" + freeAddr(t), "--p2p", "tcp://" + freeAddr(t)}
	d := startDev(t, bin, args...)
	d.waitLine(t, "created a one-node network", 30*time.Second)
	d.waitLine(t, "demo is passing", 90*time.Second)
	d.waitLine(t, "Ctrl-C stops the network", 5*time.Second)

	cli := cliRunner(t, bin, home, httpAddr)
	out, code := cli("service", "list", "-o", "json")
	var list []api.ServiceSummary
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list) != 1 || list[0].Name != "demo" || list[0].Status != "passing" {
		t.Fatalf("service list: %q (exit %d, %v)", out, code, err)
	}
	if out, code := cli("health", "demo"); code != 0 || !strings.Contains(out, "passing") {
		t.Fatalf("health demo: %q exit %d", out, code)
	}
	// The read commands, their filters and their errors (output to a pipe:
	// never coloured).
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"services"}, 0, []string{"NAME", "INSTANCES", "STATUS", "TAGS", "demo", "passing"}},
		{[]string{"services", "--status", "critical"}, 0, []string{"NAME"}},
		{[]string{"health", "demo", "--passing", "--near", "dc1"}, 0, []string{"DISTANCE", "demo-1", "1/1 agree"}},
		{[]string{"health", "demo", "--status", "critical"}, 2, []string{"CRITICAL - no instance of demo matches"}},
		{[]string{"health", "demo", "--tag", "nope"}, 2, []string{"no instance of demo matches"}},
		{[]string{"health", "demo", "--status", "bogus"}, 1, []string{`parameter status="bogus"`}},
		{[]string{"health", "nope"}, 1, []string{"nope"}},
		{[]string{"observers", "--dc", "dc1"}, 0, []string{"node0", "good"}},
		{[]string{"observers", "--dc", "dc9"}, 0, []string{"NAME"}},
		{[]string{"alerts", "-o", "yaml"}, 1, []string{`--output "yaml": want table or json`}},
		{[]string{"alerts", "--limit", "-1"}, 1, []string{"limit"}},
	} {
		out, code := cli(tc.args...)
		if code != tc.code || strings.Contains(out, "\x1b[") {
			t.Errorf("%v: exit %d, want %d (or escapes in a pipe):\n%s", tc.args, code, tc.code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: %q not in\n%s", tc.args, w, out)
			}
		}
	}
	if out, code := cli("services", "--status", "critical", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("services --status critical -o json: %q exit %d, want []", out, code)
	}
	out, code = cli("health", "demo", "--near", "dc1", "-o", "json")
	var near []api.Instance
	if err := json.Unmarshal([]byte(out), &near); err != nil || code != 0 || len(near) != 1 || near[0].DistanceMs == nil {
		t.Errorf("health demo --near dc1 -o json: %q exit %d (%v): want demo-1 with its distance", out, code, err)
	}

	// Register a service from a file, and refuse an invalid one.
	file := filepath.Join(t.TempDir(), "svc.yaml")
	os.WriteFile(file, []byte("name: db\nid: db-1\nchecks:\n  - id: tcp\n    tcp: {address: \""+demoAddr+"\"}\n    interval: 1s\n"), 0o600)
	if out, code := cli("service", "register", "-f", file); code != 0 || !strings.Contains(out, "registered db/db-1 at height") {
		t.Fatalf("service register: %q exit %d", out, code)
	}
	os.WriteFile(file, []byte("name: db\nid: db-1\nchecks:\n  - id: tcp\n    tcp: {address: x}\n    interval: 100ms\n"), 0o600)
	if out, code := cli("service", "register", "-f", file); code != 1 || !strings.Contains(out, "interval 100ms below 1s") {
		t.Fatalf("invalid service file: %q exit %d", out, code)
	}
	// A receiver's acknowledgement key: registered, listed, refused when
	// bad, removed.
	ackPub := "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"receiver", "register", "pager", "--pub-key", ackPub}, 0, "for receiver pager at height"},
		{[]string{"receiver", "list"}, 0, ackPub},
		{[]string{"receiver", "register", "pager", "--pub-key", "c2hvcnQ="}, 1, "32-byte ed25519 public key"},
		{[]string{"receiver", "register", "Pager", "--pub-key", ackPub}, 1, "receiver name"},
		{[]string{"receiver", "remove", "pager"}, 0, "removed the key of receiver pager"},
		{[]string{"receiver", "remove", "pager"}, 1, "no key is registered"},
	} {
		if out, code := cli(tc.args...); code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("%v: exit %d, want %d and %q:\n%s", tc.args, code, tc.code, tc.want, out)
		}
	}
	if out, code := cli("service", "deregister", "db", "db-1"); code != 0 || !strings.Contains(out, "deregistered db/db-1") {
		t.Fatalf("service deregister: %q exit %d", out, code)
	}
	if out, code := cli("service", "show", "db"); code != 1 || !strings.Contains(out, "not registered") {
		t.Fatalf("show after deregister: %q exit %d", out, code)
	}

	// A passive check takes results from 'bftmon submit', called the way
	// Nagios' ocsp_command calls it (docs/nagios.md), and goes stale at its ttl.
	os.WriteFile(file, []byte("name: backup\nid: db-1\nchecks:\n  - {id: nightly, kind: passive, ttl: 2s}\n"), 0o600)
	if out, code := cli("service", "register", "-f", file); code != 0 {
		t.Fatalf("register passive: %q exit %d", out, code)
	}
	if out, code := cli("submit", "backup/db-1/nightly", "2", "BACKUP CRITICAL - last run failed|age=30h;24;48"); code != 0 || !strings.Contains(out, "queued backup/db-1/nightly critical") {
		t.Fatalf("submit: %q exit %d", out, code)
	}
	if out, code := cli("submit", "demo/demo-1/http", "0", "fine|"); code != 1 || !strings.Contains(out, "only passive checks take submitted results") {
		t.Fatalf("submit for a probed check: %q exit %d", out, code)
	}
	if out, code := cli("submit", "backup/db-1/nightly", "9"); code != 1 || !strings.Contains(out, "code 9") {
		t.Fatalf("submit with a bad code: %q exit %d", out, code)
	}
	// The node takes results only with its observe token: from the home
	// (as above), --token-file or BFTMON_OBSERVE_TOKEN.
	tokenFile := filepath.Join(home, "config", "observe_token")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("bftmon dev wrote no observe token: %v", err)
	}
	tokDir := t.TempDir()
	copied, wrong, missing := filepath.Join(tokDir, "copy"), filepath.Join(tokDir, "wrong"), filepath.Join(tokDir, "missing")
	os.WriteFile(copied, token, 0o400)
	os.WriteFile(wrong, []byte(strings.Repeat("ab", 32)+"\n"), 0o400)
	otherHome := t.TempDir()
	for _, tc := range []struct {
		name string
		cli  func(args ...string) (string, int)
		args []string
		code int
		want []string
	}{
		{"--token-file", cli, []string{"--token-file", copied}, 0, []string{"queued backup/db-1/nightly critical"}},
		{"BFTMON_OBSERVE_TOKEN", cliRunner(t, bin, otherHome, httpAddr, "BFTMON_OBSERVE_TOKEN="+string(token)), nil, 0, []string{"queued backup/db-1/nightly critical"}},
		{"--token-file before BFTMON_OBSERVE_TOKEN", cliRunner(t, bin, home, httpAddr, "BFTMON_OBSERVE_TOKEN="+string(token)), []string{"--token-file", wrong}, 1, []string{"missing or wrong observe token"}},
		{"wrong token", cli, []string{"--token-file", wrong}, 1, []string{"missing or wrong observe token", "run 'bftmon submit' on the observer's host", "--token-file"}},
		{"wrong BFTMON_OBSERVE_TOKEN", cliRunner(t, bin, home, httpAddr, "BFTMON_OBSERVE_TOKEN=nope"), nil, 1, []string{"missing or wrong observe token"}},
		{"missing --token-file", cli, []string{"--token-file", missing}, 1, []string{missing, "no such file", "--token-file"}},
		{"home without a token", cliRunner(t, bin, otherHome, httpAddr), nil, 1, []string{filepath.Join(otherHome, "config", "observe_token"), "no such file", "BFTMON_HOME", "--token-file", "BFTMON_OBSERVE_TOKEN"}},
	} {
		out, code := tc.cli(append([]string{"submit", "backup/db-1/nightly", "2", "BACKUP CRITICAL - last run failed"}, tc.args...)...)
		if code != tc.code {
			t.Errorf("submit with %s: exit %d, want %d:\n%s", tc.name, code, tc.code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("submit with %s: %q not in\n%s", tc.name, w, out)
			}
		}
	}
	waitCLI := func(what string, ok func(out string, code int) bool, args ...string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, code := cli(args...)
			if ok(out, code) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: never happened; last %q exit %d", what, out, code)
			}
			time.Sleep(200 * time.Millisecond) // polling interval
		}
	}
	waitCLI("submitted critical agreed", func(out string, code int) bool {
		return code == 2 && strings.Contains(out, "critical") && strings.Contains(out, "BACKUP CRITICAL - last run failed")
	}, "health", "backup", "-o", "json")
	waitCLI("passive result stale after its ttl", func(out string, code int) bool {
		return strings.Contains(out, `"status": "stale"`)
	}, "health", "backup", "-o", "json")

	resp, err := http.Post("http://"+demoAddr+"/down", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitCLI("demo critical", func(out string, code int) bool {
		return code == 2 && strings.Contains(out, "critical")
	}, "health", "demo")
	waitCLI("the demo's state_change alert listed", func(out string, code int) bool {
		var alerts []api.Alert
		if json.Unmarshal([]byte(out), &alerts) != nil || code != 0 {
			return false
		}
		for _, a := range alerts {
			if a.Service != "demo" || a.Kind != "state_change" {
				t.Fatalf("alerts --service demo --kind state_change listed %+v", a)
			}
			if a.To == "critical" && len(a.Views) == 1 {
				return true
			}
		}
		return false
	}, "alerts", "--service", "demo", "--kind", "state_change", "-o", "json")
	if out, code := cli("alerts", "--service", "demo"); code != 0 || !strings.Contains(out, "demo/demo-1/http") || !strings.Contains(out, "critical") {
		t.Errorf("alerts table: %q exit %d", out, code)
	}
	d.stop(t)

	// Running it again resumes the same chain.
	d2 := startDev(t, bin, args...)
	d2.waitLine(t, "resuming the network", 30*time.Second)
	reg := d2.waitLine(t, "registered demo service", 90*time.Second)
	var regHeight int64
	fmt.Sscanf(reg[strings.Index(reg, "at height"):], "at height %d", &regHeight)
	l := d2.waitLine(t, "demo is passing, agreed at height", 90*time.Second)
	var h int64
	fmt.Sscanf(l[strings.Index(l, "height"):], "height %d", &h)
	if h < 5 {
		t.Fatalf("resumed network agreed at height %d: it did not keep its chain (%q)", h, l)
	}
	if h < regHeight {
		t.Fatalf("resumed network says demo is passing at height %d, before its registration at %d: an old height (%q)", h, regHeight, l)
	}
	d2.stop(t)
}

// TestCheckRun runs checks from a service file without a node, as a Nagios
// plugin would: one line each, the worst result's exit code.
func TestCheckRun(t *testing.T) {
	bin := buildBinary(t)
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	down := freeAddr(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "svc.yaml")
	os.WriteFile(file, []byte(fmt.Sprintf(`name: db
id: db-1
checks:
  - {id: up, tcp: {address: "%s"}}
  - {id: down, tcp: {address: "%s"}, timeout: 2s}
  - {id: plugin, exec: {argv: [/bin/sh, -c, "echo 'LOAD WARNING - load 4.2|load1=4.2;4;8;0'; exit 1"]}}
  - {id: later, kind: passive, ttl: 1m}
`, up.Addr(), down)), 0o600)
	run := func(args ...string) (string, int) {
		out, err := exec.Command(bin, append([]string{"check", "run", "-f", file}, args...)...).CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	cases := []struct {
		check string
		code  int
		want  string
	}{
		{"up", 0, "OK - TCP connect to " + up.Addr().String() + " ok | time="},
		{"down", 2, "CRITICAL - dial tcp " + down + ": connect: connection refused | time="},
		{"plugin", 1, "WARNING - LOAD WARNING - load 4.2 | load1=4.2;4;8;0"},
		{"later", 1, "check later is passive: nothing to run"},
		{"nope", 1, `has no check "nope"`},
	}
	for _, tc := range cases {
		out, code := run("--check", tc.check)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("check run --check %s: %q exit %d, want exit %d with %q", tc.check, out, code, tc.code, tc.want)
		}
	}
	os.WriteFile(file, []byte(fmt.Sprintf("name: db\nid: db-1\nchecks:\n  - {id: up, tcp: {address: \"%s\"}}\n  - {id: down, tcp: {address: \"%s\"}}\n", up.Addr(), down)), 0o600)
	if out, code := run(); code != 2 || !strings.Contains(out, "up: OK - ") || !strings.Contains(out, "down: CRITICAL - ") {
		t.Errorf("all checks: %q exit %d, want both lines and exit 2", out, code)
	}
}
