package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/cluster"
)

const (
	// patience bounds one wait for a condition (less when the run's own
	// deadline comes first).
	patience = 3 * time.Minute
	// pollEvery is how often a condition is asked again.
	pollEvery = 200 * time.Millisecond
	// cleanupBudget is what the run keeps back from go test's -timeout for
	// printing the logs and `docker-compose down -v`.
	cleanupBudget = 90 * time.Second
	// summaryEnv names the file the run appends its summary to (.ci/run
	// sets it and prints the file: go test hides a passing test's log).
	summaryEnv = "BFTMON_E2E_SUMMARY"
)

// instances are the demo service's instances that docker-compose.yml's
// register service registers (networks/local/services/).
var instances = []string{"target-dc1", "target-dc2"}

// Net is one docker-compose project of the repository's docker-compose.yml.
type Net struct {
	root    string   // the repository's top, where docker-compose.yml is
	compose []string // docker-compose, or docker compose
	project string
	image   string
	env     []string        // of every compose, build and script command
	ctx     context.Context // ends at the run's own deadline
	Nodes   []*Node
	webhook string // base URL of the webhook receiver's published port
	sum     *summary

	checked map[string]int64 // height up to which each node's app hashes were compared
	hashes  map[int64]string // the app hash first read at each height
}

// Node is one node's container and the client of its published HTTP API.
type Node struct {
	Name, DC string
	Client   *api.Client
	addr     string
}

// summary collects the figures of a run; they are logged as they come and
// once more together at the end, also into the file $BFTMON_E2E_SUMMARY.
type summary struct {
	mu    sync.Mutex
	start time.Time
	lines []string
}

// add logs a figure and keeps it for the summary.
func (s *summary) add(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	s.mu.Lock()
	s.lines = append(s.lines, line)
	s.mu.Unlock()
}

// write appends the summary with the run's outcome to the file named by
// $BFTMON_E2E_SUMMARY, if set, and logs it unless the run skipped (t.Skip
// says why in one line).
func (s *summary) write(t *testing.T, outcome string, skipped bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	if skipped {
		fmt.Fprintf(&b, "e2e (networks/local/e2e, %s): %s\n", t.Name(), outcome)
	} else {
		fmt.Fprintf(&b, "e2e (networks/local/e2e, %s): %s after %s\n", t.Name(), outcome, time.Since(s.start).Round(time.Second))
	}
	for _, l := range s.lines {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	if !skipped {
		t.Logf("summary:\n%s", b.String())
	}
	if path := os.Getenv(summaryEnv); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			_, err = f.WriteString(b.String())
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			t.Errorf("write the summary to $%s: %v", summaryEnv, err)
		}
	}
}

// skip ends the test with one line saying why, in the test's output and in
// the summary file.
func (s *summary) skip(t *testing.T, reason string) {
	t.Helper()
	s.write(t, "skipped: "+reason, true)
	t.Skip("e2e skipped: " + reason)
}

// dockerCompose returns the compose command, or skips the test when no
// Docker daemon answers or no compose is installed.
func dockerCompose(t *testing.T, sum *summary) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := exec.LookPath("docker"); err != nil {
		sum.skip(t, "no docker on PATH")
	}
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		sum.skip(t, fmt.Sprintf("no Docker daemon answers (docker version: %v: %s)", err, firstLine(out)))
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	sum.skip(t, "neither docker-compose nor the docker compose plugin is installed")
	return nil
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// Start builds the image with networks/local/build.sh, starts
// docker-compose.yml as a project of its own (own name, image tag, subnet
// and published ports, so a developer's cluster is never touched) and
// waits for the first agreed verdict. The project is taken down with its
// volume when the test ends, after its logs are printed if it failed.
func Start(t *testing.T) *Net {
	sum := &summary{start: time.Now()}
	t.Cleanup(func() {
		outcome := "PASS"
		if t.Failed() {
			outcome = "FAIL"
		} else if t.Skipped() {
			return // written by skip
		}
		sum.write(t, outcome, false)
	})
	compose := dockerCompose(t, sum)

	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		t.Fatalf("the repository's docker-compose.yml: %v", err)
	}
	// The run's own deadline: go test's -timeout less what the cleanup
	// needs, so that a stuck run fails and still takes its containers down.
	ctx, cancel := context.WithCancel(context.Background())
	if d, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(context.Background(), d.Add(-cleanupBudget))
	}
	t.Cleanup(cancel)

	project := fmt.Sprintf("bftmon-e2e-%d-%04x", os.Getpid(), rand.IntN(1<<16))
	n := &Net{
		root: root, compose: compose, project: project, image: "bftmon:" + project, ctx: ctx, sum: sum,
		checked: map[string]int64{}, hashes: map[int64]string{},
	}
	subnet := freeSubnet(t)
	ports := make([]string, 5)
	for i := range ports {
		ports[i] = freePort(t)
	}
	for _, kv := range os.Environ() {
		// The developer's compose and cluster settings are not the run's.
		if !strings.HasPrefix(kv, "COMPOSE_") && !strings.HasPrefix(kv, "BFTMON_") {
			n.env = append(n.env, kv)
		}
	}
	n.env = append(n.env,
		"COMPOSE_PROJECT_NAME="+project,
		"COMPOSE_FILE="+filepath.Join(root, "docker-compose.yml"),
		"BFTMON_IMAGE="+n.image,
		"BFTMON_NET="+subnet,
		"BFTMON_PORT_WEBHOOK="+ports[4],
	)
	for i := range 4 {
		name := fmt.Sprintf("node%d", i)
		n.env = append(n.env, fmt.Sprintf("BFTMON_PORT_NODE%d=%s", i, ports[i]))
		addr := "127.0.0.1:" + ports[i]
		n.Nodes = append(n.Nodes, &Node{Name: name, DC: fmt.Sprintf("dc%d", i/2+1), Client: api.NewClient(addr), addr: addr})
	}
	n.webhook = "http://127.0.0.1:" + ports[4]
	t.Logf("compose project %s: image %s, subnets %s.0-2.0/24, API ports %s, webhook port %s (should the run be killed before its cleanup: COMPOSE_PROJECT_NAME=%s docker-compose down -v; docker image rm %s)",
		project, n.image, subnet, strings.Join(ports[:4], ","), ports[4], project, n.image)

	start := time.Now()
	n.run(t, 10*time.Minute, filepath.Join(root, "networks", "local", "build.sh"), n.image)
	sum.add(t, "image %s built by build.sh in %s", n.image, time.Since(start).Round(100*time.Millisecond))
	t.Cleanup(func() { n.down(t) })

	start = time.Now()
	n.Compose(t, "up", "-d")
	up := time.Since(start)
	first := n.WaitFor(t, "the first agreed verdict (demo's instances registered and decided)", func(ctx context.Context) (bool, error) {
		for _, inst := range instances {
			if ch, err := demoCheck(ctx, n.Nodes[0], inst); err == nil && ch.HardStatus == "passing" {
				return true, nil
			}
		}
		return false, errors.New("no instance of demo agreed passing yet")
	})
	for _, inst := range instances {
		n.waitCheck(t, n.Nodes[0], inst, "passing", "passing")
	}
	both := time.Since(start)
	for _, nd := range n.Nodes {
		n.WaitUp(t, nd, 1)
	}
	sum.add(t, "docker-compose up -d returned in %s; first agreed verdict %s after up; both instances passing after %s; every node committing after %s",
		up.Round(100*time.Millisecond), first.Round(100*time.Millisecond), both.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	n.CheckInvariants(t)
	return n
}

// down prints the containers' logs if the test failed, then removes the
// project's containers, networks and volume, and the image the run built.
func (n *Net) down(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if t.Failed() {
		out, err := n.command(ctx, n.compose[0], append(n.compose[1:], "logs", "--no-color", "--tail", "60")...).CombinedOutput()
		t.Logf("the failed run's containers, last 60 lines each (docker-compose logs --tail 60; err %v):\n%s", err, out)
		if out, err := n.command(ctx, n.compose[0], append(n.compose[1:], "ps")...).CombinedOutput(); err == nil {
			t.Logf("docker-compose ps:\n%s", out)
		}
	}
	if out, err := n.command(ctx, n.compose[0], append(n.compose[1:], "down", "-v", "--remove-orphans", "-t", "5")...).CombinedOutput(); err != nil {
		t.Errorf("docker-compose down -v: %v\n%s", err, out)
	}
	if out, err := n.command(ctx, "docker", "image", "rm", n.image).CombinedOutput(); err != nil {
		t.Logf("docker image rm %s: %v: %s", n.image, err, firstLine(out))
	}
}

// freeSubnet picks a BFTMON_NET prefix 10.X whose three /24s (10.X.0-2.0)
// no Docker network and no interface of this machine uses.
func freeSubnet(t *testing.T) string {
	t.Helper()
	var used []netip.Prefix
	ids, err := exec.Command("docker", "network", "ls", "-q").Output()
	if err != nil {
		t.Fatalf("docker network ls: %v", err)
	}
	if f := strings.Fields(string(ids)); len(f) > 0 {
		out, err := exec.Command("docker", append([]string{"network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"}, f...)...).Output()
		if err != nil {
			t.Fatalf("docker network inspect: %v", err)
		}
		for _, s := range strings.Fields(string(out)) {
			if p, err := netip.ParsePrefix(s); err == nil {
				used = append(used, p)
			}
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				used = append(used, p.Masked())
			}
		}
	}
	for range 200 {
		x := 100 + rand.IntN(150)
		want := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/22", x))
		if !slices.ContainsFunc(used, want.Overlaps) {
			return fmt.Sprintf("10.%d", x)
		}
	}
	t.Fatalf("no free 10.X.0.0/22 for the run's networks among %v", used)
	return ""
}

// freePort returns a loopback TCP port that was free just now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// command is name with args run in the repository's top with the run's
// environment.
func (n *Net) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = n.root, n.env
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// run runs a command to its end (within timeout and the run's deadline),
// failing the test with its output if it fails; it returns the output.
func (n *Net) run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	what := strings.Join(append([]string{strings.TrimPrefix(name, n.root+"/")}, args...), " ")
	start := time.Now()
	out, err := n.command(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, out)
	}
	t.Logf("%s (%s): %s", what, time.Since(start).Round(10*time.Millisecond), strings.Join(strings.Fields(string(out)), " "))
	return string(out)
}

// Compose runs docker-compose (or docker compose) with args.
func (n *Net) Compose(t *testing.T, args ...string) string {
	t.Helper()
	return n.run(t, 5*time.Minute, n.compose[0], append(n.compose[1:], args...)...)
}

// Script runs one of networks/local/scripts/ with args, as a user would,
// and returns how long it took.
func (n *Net) Script(t *testing.T, script string, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	n.run(t, 3*time.Minute, filepath.Join(n.root, "networks", "local", "scripts", script), args...)
	return time.Since(start)
}

// WaitFor asks cond every pollEvery until it holds and returns how long
// that took, failing the test with cond's last error after patience (or at
// the run's deadline). cond gets a context bounded by the wait.
func (n *Net) WaitFor(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, patience)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
		ok, err := cond(cctx)
		ccancel()
		if ok {
			return time.Since(start)
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("gave up after %s waiting for %s (last: %v)", time.Since(start).Round(time.Second), what, last)
		case <-time.After(pollEvery):
		}
	}
}

// Status is the node's status, also while it is not committing (then
// Committing is false); an error only when it does not answer.
func (nd *Node) Status(ctx context.Context) (api.Status, error) {
	s, err := nd.Client.Status(ctx)
	if errors.Is(err, api.ErrNotReady) && s.ChainID != "" {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("%s status: %w", nd.Name, err)
	}
	return s, nil
}

// Height is the node's committed height (0 if it does not answer).
func (nd *Node) Height(ctx context.Context) int64 {
	s, _ := nd.Status(ctx)
	return s.Height
}

// Metrics is the node's /metrics text.
func (nd *Node) Metrics(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.addr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s metrics: %w", nd.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("%s metrics: %w", nd.Name, err)
	}
	return string(b), nil
}

// WaitUp waits until the node answers, has caught up, is committing and
// has committed height h, and returns how long that took.
func (n *Net) WaitUp(t *testing.T, nd *Node, h int64) time.Duration {
	t.Helper()
	return n.WaitFor(t, fmt.Sprintf("%s committing at height %d or above", nd.Name, h), func(ctx context.Context) (bool, error) {
		s, err := nd.Status(ctx)
		if err != nil {
			return false, err
		}
		return s.Committing && !s.CatchingUp && s.Height >= h,
			fmt.Errorf("%s at height %d, committing %t, catching up %t, %d of %d peers", nd.Name, s.Height, s.Committing, s.CatchingUp, s.Peers, s.ExpectedPeers)
	})
}

// MaxHeight is the highest height one of nodes (all of them: none given)
// answers.
func (n *Net) MaxHeight(ctx context.Context, nodes ...*Node) int64 {
	if len(nodes) == 0 {
		nodes = n.Nodes
	}
	var h int64
	for _, nd := range nodes {
		h = max(h, nd.Height(ctx))
	}
	return h
}

// Heights is each node's height, by name, for the log.
func (n *Net) Heights(ctx context.Context) map[string]int64 {
	m := map[string]int64{}
	for _, nd := range n.Nodes {
		m[nd.Name] = nd.Height(ctx)
	}
	return m
}

// demoCheck is the agreed state of demo/INSTANCE/http as the node serves it.
func demoCheck(ctx context.Context, nd *Node, instance string) (api.Check, error) {
	insts, _, err := nd.Client.Service(ctx, "demo", nil)
	if err != nil {
		return api.Check{}, fmt.Errorf("%s: service demo: %w", nd.Name, err)
	}
	for _, in := range insts {
		if in.ID == instance && len(in.Checks) == 1 {
			return in.Checks[0], nil
		}
	}
	return api.Check{}, fmt.Errorf("%s: demo has no instance %s with one check: %+v", nd.Name, instance, insts)
}

// waitCheck waits until the node serves demo/INSTANCE/http with the verdict
// and hard status given, and returns it.
func (n *Net) waitCheck(t *testing.T, nd *Node, instance, verdict, hard string) api.Check {
	t.Helper()
	var got api.Check
	n.WaitFor(t, fmt.Sprintf("%s to see demo/%s %s (hard %s)", nd.Name, instance, verdict, hard), func(ctx context.Context) (bool, error) {
		ch, err := demoCheck(ctx, nd, instance)
		if err != nil {
			return false, err
		}
		got = ch
		return ch.Status == verdict && ch.HardStatus == hard, fmt.Errorf("verdict %s, hard %s", ch.Status, ch.HardStatus)
	})
	return got
}

// alertsSince lists the alerts the node committed above height, of kind
// (any: "") about instance (any: ""), oldest first.
func alertsSince(ctx context.Context, nd *Node, kind, instance string, height int64) ([]api.Alert, error) {
	all, _, err := nd.Client.Alerts(ctx, &api.QueryOptions{Limit: 1000})
	if err != nil {
		return nil, fmt.Errorf("%s: alerts: %w", nd.Name, err)
	}
	var out []api.Alert
	for _, a := range all {
		if a.Height > height && (kind == "" || a.Kind == kind) && (instance == "" || a.Instance == instance) {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Height < out[j].Height })
	return out, nil
}

// describe is a list of alerts for a message.
func describe(als []api.Alert) string {
	var parts []string
	for _, a := range als {
		subject := a.Instance
		if a.Observer != "" {
			subject = "observer " + a.Observer
		}
		parts = append(parts, fmt.Sprintf("%s %s %s→%s at %d", a.Kind, subject, a.From, a.To, a.Height))
	}
	return "[" + strings.Join(parts, "; ") + "]"
}

// received is one alert the webhook receiver got (GET /alerts of bftmon
// webhook receive).
type received struct {
	ID            string    `json:"id"`
	Kind          string    `json:"kind"`
	Subject       string    `json:"subject"`
	From          string    `json:"from"`
	To            string    `json:"to"`
	Height        int64     `json:"height"`
	Copies        int       `json:"copies"`
	FirstReceived time.Time `json:"first_received"`
}

// Received lists what the webhook receiver got, by alert id.
func (n *Net) Received(ctx context.Context) (map[string]received, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.webhook+"/alerts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("webhook receiver: GET /alerts: HTTP %d", resp.StatusCode)
	}
	var list []received
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("webhook receiver: GET /alerts: %w", err)
	}
	m := map[string]received{}
	for _, r := range list {
		m[r.ID] = r
	}
	return m, nil
}

// receivedAbove is what the webhook receiver got of the alerts committed
// above height, oldest first; it fails the test if the receiver does not
// answer. (An alert committed before is still delivered afterwards, so a
// scenario tells its own alerts by height.)
func (n *Net) receivedAbove(t *testing.T, height int64) []received {
	t.Helper()
	ctx, cancel := context.WithTimeout(n.ctx, 15*time.Second)
	defer cancel()
	m, err := n.Received(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	for _, r := range m {
		if r.Height > height {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Height < out[j].Height })
	return out
}

// WaitDelivered waits until the webhook receiver got the alert and returns
// what it got.
func (n *Net) WaitDelivered(t *testing.T, al api.Alert) received {
	t.Helper()
	var got received
	n.WaitFor(t, fmt.Sprintf("the webhook receiver to get alert %s (%s %s %s→%s)", al.ID, al.Kind, al.Instance, al.From, al.To), func(ctx context.Context) (bool, error) {
		m, err := n.Received(ctx)
		got = m[al.ID]
		return got.ID != "", err
	})
	if got.Kind != al.Kind || got.From != al.From || got.To != al.To || got.Height != al.Height {
		t.Fatalf("the webhook receiver got %+v for committed alert %+v", got, al)
	}
	return got
}

// CheckInvariants fails the test unless every node answering has the app
// hash the others have at every height it committed since the last check
// (the nodes keep the last 1000 versions, so each scenario checks its
// own), and every committed alert is justified by its views
// (cluster.Justified).
func (n *Net) CheckInvariants(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(n.ctx, 2*time.Minute)
	defer cancel()
	compared := 0
	for _, nd := range n.Nodes {
		top := nd.Height(ctx)
		if top == 0 {
			continue // not running
		}
		for h := max(n.checked[nd.Name]+1, top-900, 1); h <= top; h++ {
			ah, err := nd.Client.AppHash(ctx, h)
			if err != nil {
				t.Fatalf("invariants: %s: app hash at %d: %v", nd.Name, h, err)
			}
			if ref, ok := n.hashes[h]; !ok {
				n.hashes[h] = ah.AppHash
			} else if ref != ah.AppHash {
				t.Fatalf("invariants: at height %d %s has app hash %s, another node %s", h, nd.Name, ah.AppHash, ref)
			}
			compared++
		}
		n.checked[nd.Name] = top
	}
	obs, _, err := n.Nodes[0].Client.Observers(ctx, nil)
	if err != nil {
		t.Fatalf("invariants: observers: %v", err)
	}
	weight := map[string]uint64{}
	for _, o := range obs {
		weight[o.ID] = o.Weight
	}
	alerts, _, err := n.Nodes[0].Client.Alerts(ctx, &api.QueryOptions{Limit: 1000})
	if err != nil {
		t.Fatalf("invariants: alerts: %v", err)
	}
	for _, al := range alerts {
		if err := cluster.Justified(al, weight); err != nil {
			t.Fatalf("invariants: alert %s (%s %s→%s at height %d) is not justified: %v", al.ID, al.Kind, al.From, al.To, al.Height, err)
		}
	}
	t.Logf("invariants hold: %d app hashes compared (heights up to %v), %d alerts justified", compared, n.checked, len(alerts))
}

// blockWatch notes the block time of every height some node reports, by
// polling all of them, until stopped.
type blockWatch struct {
	mu    sync.Mutex
	times map[int64]time.Time
	stop  context.CancelFunc
	done  chan struct{}
}

// WatchBlocks starts a blockWatch.
func (n *Net) WatchBlocks() *blockWatch {
	ctx, cancel := context.WithCancel(n.ctx)
	w := &blockWatch{times: map[int64]time.Time{}, stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for _, nd := range n.Nodes {
				rctx, rcancel := context.WithTimeout(ctx, time.Second)
				s, err := nd.Status(rctx)
				rcancel()
				if err == nil && s.Height > 0 {
					w.mu.Lock()
					if _, ok := w.times[s.Height]; !ok {
						w.times[s.Height] = s.BlockTime
					}
					w.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

// Stop ends the watch and returns the longest time between the block times
// of two heights seen one after the other, the height that ended it, how
// many heights lie between them unseen, and how many heights were seen.
func (w *blockWatch) Stop() (gap time.Duration, at int64, unseen int64, seen int) {
	w.stop()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	hs := make([]int64, 0, len(w.times))
	for h := range w.times {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	for i := 1; i < len(hs); i++ {
		if d := w.times[hs[i]].Sub(w.times[hs[i-1]]); d > gap {
			gap, at, unseen = d, hs[i], hs[i]-hs[i-1]-1
		}
	}
	return gap, at, unseen, len(hs)
}
