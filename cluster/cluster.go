// Package cluster runs a real multi-node bftmon network for tests: the real
// bftmon binary as N separate processes from `bftmon testnet` homes, with
// the means to kill -9, pause and resume, restart with other flags, cut an
// observer off from targets, wait on conditions, and check the invariants
// every run must keep (docs/TESTING.md).
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/notify"
)

// Patience bounds every wait of the harness that gives no deadline.
const Patience = 60 * time.Second

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds the bftmon binary once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "bftmon-cluster-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "bftmon")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/bftmon/bftmon/cmd/bftmon").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Cluster is a testnet whose nodes run as separate processes.
type Cluster struct {
	t        testing.TB
	bin      string
	dir      string
	Nodes    []*Node
	Operator keys.Key
}

// Node is one node of the cluster.
type Node struct {
	node.TestnetNode
	Index  int
	Client *api.Client

	c    *Cluster
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the running process exits
	log  *os.File
}

// New writes an n-node testnet over dcs datacenters in a temporary
// directory, on free ports; nothing runs yet. Every process is killed when
// the test ends; on failure the tail of each node's log is printed.
func New(t testing.TB, n, dcs int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t), dir: t.TempDir()}
	base := freeBase(t, n)
	out, err := exec.Command(c.bin, "testnet", "--nodes", fmt.Sprint(n), "--dcs", fmt.Sprint(dcs),
		"--out", c.dir, "--base-port", fmt.Sprint(base), "--chain-id", "cluster-test").CombinedOutput()
	if err != nil {
		t.Fatalf("bftmon testnet: %v\n%s", err, out)
	}
	if c.Operator, err = keys.Load(filepath.Join(c.dir, "operator_key.json")); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		port := base + 10*i
		tn := node.TestnetNode{
			Name: fmt.Sprintf("node%d", i), Home: filepath.Join(c.dir, fmt.Sprintf("node%d", i)),
			Datacenter: fmt.Sprintf("dc%d", i*dcs/n+1),
			P2PAddr:    fmt.Sprintf("127.0.0.1:%d", port), RPCAddr: fmt.Sprintf("127.0.0.1:%d", port+1), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", port+2),
		}
		c.Nodes = append(c.Nodes, &Node{TestnetNode: tn, Index: i, Client: api.NewClient(tn.HTTPAddr), c: c})
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			nd.kill()
		}
		if t.Failed() {
			for _, nd := range c.Nodes {
				t.Logf("--- %s log (last 40 lines) ---\n%s", nd.Name, tail(nd.logPath(), 40))
			}
		}
	})
	return c
}

// InitTimeouts gives every node the consensus timeouts of `bftmon init`
// (CometBFT's defaults: propose 3 s growing 0.5 s a round, votes 1 s,
// commit 0.5 s) instead of the testnet's loopback ones, so that a round
// whose proposer is down costs what it costs in a deployment. Call it
// before the nodes start.
func (c *Cluster) InitTimeouts() {
	c.t.Helper()
	set := map[string]string{
		"timeout_propose": "3s", "timeout_propose_delta": "500ms",
		"timeout_prevote": "1s", "timeout_prevote_delta": "500ms",
		"timeout_precommit": "1s", "timeout_precommit_delta": "500ms",
		"timeout_commit": "500ms",
	}
	for _, n := range c.Nodes {
		path := filepath.Join(n.Home, "config", "config.toml")
		bz, err := os.ReadFile(path)
		if err != nil {
			c.t.Fatal(err)
		}
		lines := strings.Split(string(bz), "\n")
		done := 0
		for i, l := range lines {
			if k, _, ok := strings.Cut(l, " = "); ok {
				if v, ok := set[k]; ok {
					lines[i] = fmt.Sprintf("%s = %q", k, v)
					done++
				}
			}
		}
		if done != len(set) {
			c.t.Fatalf("%s: set %d of the %d consensus timeouts", path, done, len(set))
		}
		if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
}

// freeBase finds a base port whose 10n ports are free on 127.0.0.1: first
// around ports the kernel hands out, then, since on a machine with many
// TIME_WAIT sockets the ephemeral range may hold no free run that long, in
// the ports below it.
func freeBase(t testing.TB, n int) int {
	t.Helper()
	free := func(base int) bool {
		if base < 1024 || base+10*n > 65000 {
			return false
		}
		for p := base; p < base+10*n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return false
			}
			l.Close()
		}
		return true
	}
	for try := 0; try < 50; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if base -= base % 10; base >= 20000 && free(base) {
			return base
		}
	}
	low := 32768 // Linux's default ephemeral range starts here
	if bz, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(bz), &low)
	}
	span := 10 * n
	first := 10000 + rand.IntN(max(1, (low-10000-span)/span))*span
	for base := first; base+span <= low; base += span {
		if free(base) {
			return base
		}
	}
	for base := 10000; base < first; base += span {
		if free(base) {
			return base
		}
	}
	t.Fatalf("no free range of %d ports on 127.0.0.1, neither in the ephemeral range nor in 10000..%d", span, low)
	return 0
}

func (n *Node) logPath() string { return filepath.Join(n.c.dir, n.Name+".log") }

// Start runs the node's process with extra flags for `bftmon start`
// (--fault-injection is always given). It returns once the process runs;
// use WaitUp to wait for its API.
func (n *Node) Start(flags ...string) {
	n.c.t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		n.c.t.Fatalf("%s is already running", n.Name)
	}
	log, err := os.OpenFile(n.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.c.t.Fatal(err)
	}
	fmt.Fprintf(log, "=== start %v at %s\n", flags, time.Now().Format(time.RFC3339Nano))
	args := append([]string{"start", "--home", n.Home, "--fault-injection", "--log-level", "info"}, flags...)
	cmd := exec.Command(n.c.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		n.c.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.cmd, n.done, n.log = cmd, done, log
}

// Running tells whether the node's process runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Kill sends SIGKILL and waits for the process to exit.
func (n *Node) Kill() { n.signalAndWait(syscall.SIGKILL) }

// Stop sends SIGTERM and waits for a clean exit.
func (n *Node) Stop() { n.signalAndWait(syscall.SIGTERM) }

// Pause sends SIGSTOP; Resume sends SIGCONT.
func (n *Node) Pause()  { n.signal(syscall.SIGSTOP) }
func (n *Node) Resume() { n.signal(syscall.SIGCONT) }

// Restart stops the node (SIGTERM) and starts it again with flags.
func (n *Node) Restart(flags ...string) {
	n.c.t.Helper()
	n.Stop()
	n.Start(flags...)
	n.WaitUp()
}

func (n *Node) signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		_ = n.cmd.Process.Signal(sig)
	}
}

func (n *Node) signalAndWait(sig syscall.Signal) {
	n.c.t.Helper()
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused process cannot exit
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		if sig != syscall.SIGKILL {
			n.c.t.Errorf("%s did not exit within 30s of %v", n.Name, sig)
		}
	}
	n.mu.Lock()
	n.cmd = nil
	n.log.Close()
	n.mu.Unlock()
}

func (n *Node) kill() {
	n.mu.Lock()
	cmd, done := n.cmd, n.done
	n.cmd = nil
	n.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Kill()
		<-done
	}
}

// WaitUp waits until the node's API answers.
func (n *Node) WaitUp() {
	n.c.t.Helper()
	n.c.WaitFor(n.Name+" up", Patience, func(ctx context.Context) (bool, error) {
		_, err := n.Client.Status(ctx)
		return err == nil, err
	})
}

// Height is the node's last committed height (0 when it does not answer).
func (n *Node) Height(ctx context.Context) int64 {
	st, err := n.Client.Status(ctx)
	if err != nil {
		return 0
	}
	return st.Height
}

// StartAll starts every node with flags and waits until each has
// committed a block and takes transactions: a node still syncing blocks
// from its peers (CometBFT's blocksync) commits them but refuses
// transactions (503, not ready) until it has caught up.
func (c *Cluster) StartAll(flags ...string) {
	c.t.Helper()
	for _, n := range c.Nodes {
		n.Start(flags...)
	}
	c.WaitHeight(1)
	c.WaitFor("every node taking transactions", Patience, func(ctx context.Context) (bool, error) {
		for _, n := range c.Nodes {
			st, err := n.Client.Status(ctx)
			if err != nil || st.CatchingUp {
				return false, err
			}
		}
		return true, nil
	})
}

// Running lists the nodes whose process runs.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// WaitFor polls cond every 100ms until it holds, failing the test after
// timeout with the last error. cond gets a context bounded by the deadline.
func (c *Cluster) WaitFor(what string, timeout time.Duration, cond func(ctx context.Context) (bool, error)) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := cond(ctx)
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			c.t.Fatalf("gave up after %s waiting for %s (last error: %v)", timeout, what, last)
		case <-tick.C:
		}
	}
}

// WaitHeight waits until every running node has committed height h.
func (c *Cluster) WaitHeight(h int64) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("every running node at height %d", h), Patience, func(ctx context.Context) (bool, error) {
		for _, n := range c.Running() {
			if got := n.Height(ctx); got < h {
				return false, fmt.Errorf("%s at height %d", n.Name, got)
			}
		}
		return true, nil
	})
}

// MaxHeight is the highest height any running node has committed.
func (c *Cluster) MaxHeight(ctx context.Context) int64 {
	var h int64
	for _, n := range c.Running() {
		h = max(h, n.Height(ctx))
	}
	return h
}

// SetUnreachable tells node n's observer that targets (host:port) are
// unreachable from it; none heals it.
func (n *Node) SetUnreachable(targets ...string) {
	n.c.t.Helper()
	body, _ := json.Marshal(node.Unreachable{Targets: append([]string{}, targets...)})
	req, _ := http.NewRequest(http.MethodPut, "http://"+n.HTTPAddr+"/v1/debug/unreachable", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.c.t.Fatalf("%s: fault injection: %v", n.Name, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		n.c.t.Fatalf("%s: fault injection: HTTP %d", n.Name, resp.StatusCode)
	}
}

// Metrics returns node n's /metrics text.
func (n *Node) Metrics(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return b.String(), err
}

// Metric sums the samples of a metric in a /metrics text whose labels
// include every one of match (like `mode="replay"`).
func Metric(text, name string, match ...string) float64 {
	var sum float64
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(l, m)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	bz, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(bz), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// SetNotify writes the same notification settings into every node's
// config/bftmon.json; nodes read them when they start.
func (c *Cluster) SetNotify(s notify.Settings) {
	c.t.Helper()
	for _, n := range c.Nodes {
		st, err := node.ReadSettings(n.Home)
		if err != nil {
			c.t.Fatal(err)
		}
		st.Notify = s
		if err := node.WriteSettings(n.Home, st); err != nil {
			c.t.Fatal(err)
		}
	}
}

// ObserverID is the id of node n's observer key.
func (n *Node) ObserverID() string {
	n.c.t.Helper()
	k, err := keys.Load(filepath.Join(n.Home, node.ObserverKeyFile))
	if err != nil {
		n.c.t.Fatal(err)
	}
	return k.ID()
}
