package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// contender is one real `bftmon lock acquire` process whose command marks
// in a file that it runs (removed when it gets SIGTERM).
type contender struct {
	name   string
	cmd    *exec.Cmd
	mark   string // exists while the command runs
	start  string // written once with the command's start time (unix ns)
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
}

func (ct *contender) Write(p []byte) (int, error) {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.out.Write(p)
}

func (ct *contender) output() string {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	return ct.out.String()
}

var acquiredLine = regexp.MustCompile(`acquired (\S+) \(session (\S+), lock index (\d+)\)`)

// session is the session id the contender printed when it acquired the
// lock ("" before).
func (ct *contender) session() string {
	if m := acquiredLine.FindStringSubmatch(ct.output()); m != nil {
		return m[2]
	}
	return ""
}

// crash kills the contender and its command at once (SIGKILL to the
// process group): a holder that dies without releasing or renewing.
func (ct *contender) crash(t *testing.T) {
	if err := syscall.Kill(-ct.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill contender %s: %v", ct.name, err)
	}
	<-ct.exited
	_ = os.Remove(ct.mark)
}

// started is when the contender's command started.
func (ct *contender) started(t *testing.T) time.Time {
	bz, err := os.ReadFile(ct.start)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseInt(string(bytes.TrimSpace(bz)), 10, 64)
	if err != nil {
		t.Fatalf("%s's start file: %v", ct.name, err)
	}
	return time.Unix(0, ns)
}

func (ct *contender) running() bool {
	_, err := os.Stat(ct.mark)
	return err == nil
}

// startContender runs bftmon lock acquire KEY for instance against node n.
func startContender(t *testing.T, c *Cluster, n *Node, name, key, instance string) *contender {
	dir := t.TempDir()
	ct := &contender{name: name, mark: filepath.Join(dir, "running"), start: filepath.Join(dir, "started"), exited: make(chan struct{})}
	script := fmt.Sprintf(`date +%%s%%N > %s; touch %s; trap 'rm -f %s; exit 0' TERM; while :; do sleep 0.1; done`, ct.start, ct.mark, ct.mark)
	ct.cmd = exec.Command(c.bin, "lock", "acquire", key, "--instance", instance, "--addr", n.HTTPAddr,
		"--key", filepath.Join(c.dir, "operator_key.json"), "--ttl", "10s", "--lock-delay", "3s", "--grace", "2s",
		"--", "sh", "-c", script)
	ct.cmd.Stdout, ct.cmd.Stderr = ct, ct
	ct.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // crash() kills it with its command
	ct.cmd.WaitDelay = 5 * time.Second                       // its command's shell may hold the output open a moment
	if err := ct.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { ct.cmd.Wait(); close(ct.exited) }()
	t.Cleanup(func() {
		// SIGTERM: it stops its command, releases and destroys its session.
		_ = ct.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-ct.exited:
		case <-time.After(10 * time.Second):
			_ = ct.cmd.Process.Kill()
			<-ct.exited
		}
		if t.Failed() {
			t.Logf("--- contender %s output ---\n%s", ct.name, ct.output())
		}
	})
	return ct
}

// TestLockElection runs leader election with the real `bftmon lock
// acquire` binary as two contenders on a real 4-node network (node0,
// node1 in dc1; node2, node3 in dc2), each for its own instance of web
// whose check probes its own HTTP target: exactly one holds the lock at
// every height seen; a lying observer (always-critical) cannot take the
// lock from the leader; the leader's target really going down ends its
// session after confirm, and after the lock-delay the other contender
// leads and its command starts; CAS races from two clients on two nodes
// have exactly one winner a round and lose no increment.
func TestLockElection(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	c.StartAll()
	n0, n2, n3 := c.Nodes[0], c.Nodes[2], c.Nodes[3]
	tgA, tgB := newTarget(t), newTarget(t)
	registerWeb(ctx, t, c, n0, tgA, tgB)
	c.WaitFor("web-1 and web-2 agreed passing (hard)", Patience, func(ctx context.Context) (bool, error) {
		insts, _, err := n0.Client.Service(ctx, "web", &api.QueryOptions{Status: []string{"passing"}})
		return err == nil && len(insts) == 2, err
	})

	const key = "locks/web-leader"
	a := startContender(t, c, n0, "A", key, "web/web-1")
	c.WaitFor("A to acquire the lock and start its command", Patience, func(ctx context.Context) (bool, error) {
		return a.session() != "" && a.running(), fmt.Errorf("A: %q", a.output())
	})
	b := startContender(t, c, n2, "B", key, "web/web-2")
	c.WaitFor("B to have its session and wait", Patience, func(ctx context.Context) (bool, error) {
		return bytes.Contains([]byte(b.output()), []byte("waiting for")), fmt.Errorf("B: %q", b.output())
	})

	// holderAt checks one reading of the agreed state: the lock is held, by
	// want's session, whose command alone runs.
	check := func(ctx context.Context, n *Node, want, other *contender) (int64, error) {
		l, _, err := n.Client.Lock(ctx, key, nil)
		if err != nil {
			return 0, err
		}
		h := n.Height(ctx)
		if l.Session == "" || l.Session != want.session() {
			t.Fatalf("at height ~%d the lock is held by %q (%s/%s), want %s's session %s", h, l.Session, l.Service, l.Instance, want.name, want.session())
		}
		if other.running() || other.session() != "" {
			t.Fatalf("at height ~%d %s's command runs or it acquired the lock too:\n%s", h, other.name, other.output())
		}
		if !want.running() {
			t.Fatalf("at height ~%d %s holds the lock but its command does not run:\n%s", h, want.name, want.output())
		}
		return h, nil
	}

	t.Run("two contenders: exactly one holds the lock at every height", func(t *testing.T) {
		c.t = t
		seen := map[int64]bool{}
		from := n0.Height(ctx)
		c.WaitFor("10 heights, each with A alone holding the lock", Patience, func(ctx context.Context) (bool, error) {
			for _, n := range []*Node{n0, n2} {
				h, err := check(ctx, n, a, b)
				if err != nil {
					return false, err
				}
				seen[h] = true
			}
			return n0.Height(ctx) >= from+10, nil
		})
		t.Logf("checked the holder on node0 and node2 at %d distinct heights from %d", len(seen), from)
	})

	t.Run("an always-critical observer cannot take the leader's lock", func(t *testing.T) {
		c.t = t
		n3.Restart("--byzantine=always-critical")
		from := n0.Height(ctx)
		c.WaitFor("25 heights with the liar: A keeps the lock and its command", 2*Patience, func(ctx context.Context) (bool, error) {
			if _, err := check(ctx, n0, a, b); err != nil {
				return false, err
			}
			ch, err := webInstanceCheck(ctx, n0, "web-1")
			if err == nil && ch.HardStatus != "passing" {
				t.Fatalf("the liar moved web-1's hard status to %s", ch.HardStatus)
			}
			return n0.Height(ctx) >= from+25, err
		})
		ch, err := webInstanceCheck(ctx, n0, "web-1")
		if err != nil {
			t.Fatal(err)
		}
		lied := false
		for _, o := range ch.Observers {
			lied = lied || (o.Name == "node3" && o.Status == "critical")
		}
		if !lied {
			t.Fatalf("node3 never reported web-1 critical: %+v", ch.Observers)
		}
		n3.Restart()
	})

	t.Run("the leader's instance really goes down: failover after confirm and the lock-delay", func(t *testing.T) {
		c.t = t
		down := time.Now()
		tgA.down.Store(true)
		var released time.Time
		c.WaitFor("A's session invalidated and A's command stopped", Patience, func(ctx context.Context) (bool, error) {
			l, _, err := n0.Client.Lock(ctx, key, nil)
			if err != nil {
				return false, err
			}
			if l.Session == a.session() {
				return false, errors.New("A still holds it")
			}
			if released.IsZero() {
				released = time.Now()
				if l.Session != "" && l.Session != b.session() {
					t.Fatalf("held by an unknown session %s", l.Session)
				}
			}
			return !a.running(), fmt.Errorf("A's command still runs")
		})
		if s, _, err := n0.Client.SessionInfo(ctx, a.session(), nil); err == nil && s != nil {
			t.Fatalf("A's session %s is still alive: %+v", a.session(), s)
		}
		c.WaitFor("B to acquire the lock and start its command", Patience, func(ctx context.Context) (bool, error) {
			return b.session() != "" && b.running(), fmt.Errorf("B: %q", b.output())
		})
		started := b.started(t)
		t.Logf("failover, all four validators up: target down → A's lock released %s; → B's command started %s (confirm 1 s, lock-delay 3 s)",
			released.Sub(down).Round(10*time.Millisecond), started.Sub(down).Round(10*time.Millisecond))
		if started.Sub(released) < 2500*time.Millisecond {
			t.Fatalf("B started %s after the release, inside the 3 s lock-delay", started.Sub(released))
		}
		// B's node answered its acquire at commit; node0 may be a block
		// behind.
		c.WaitFor("node0 to show B holding the lock", Patience, func(ctx context.Context) (bool, error) {
			l, _, err := n0.Client.Lock(ctx, key, nil)
			if err != nil {
				return false, err
			}
			if l.Session != "" && l.Session != b.session() {
				t.Fatalf("holder %+v, want B's session for web-2", l)
			}
			return l.Session == b.session() && l.Instance == "web-2", fmt.Errorf("holder %+v", l)
		})
		select {
		case <-a.exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("A did not exit after losing the lock:\n%s", a.output())
		}
		if !bytes.Contains([]byte(a.output()), []byte("lost "+key)) {
			t.Fatalf("A did not say it lost the lock:\n%s", a.output())
		}
		out, err := exec.Command(c.bin, "lock", "holder", key, "--addr", n3.HTTPAddr).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("held by session "+b.session()+" of web/web-2")) {
			t.Fatalf("bftmon lock holder: %s (%v)", out, err)
		}
	})

	t.Run("CAS races from two clients: one winner a round, no increment lost", func(t *testing.T) {
		c.t = t
		const counter = "config/counter"
		if _, err := n0.Client.KVCAS(ctx, c.Operator.Private, counter, []byte("0"), 0, 0); err != nil {
			t.Fatal(err)
		}
		clients := []*api.Client{n0.Client, n2.Client}
		for round := 1; round <= 6; round++ {
			var idx [2]uint64
			var val [2]int
			for i, cl := range clients {
				kv, _, err := cl.KVGet(ctx, counter, &api.KVOptions{})
				for err == nil && kv == nil {
					kv, _, err = cl.KVGet(ctx, counter, &api.KVOptions{})
				}
				if err != nil {
					t.Fatal(err)
				}
				idx[i] = kv.ModifyIndex
				val[i], _ = strconv.Atoi(string(kv.Value))
			}
			if idx[0] != idx[1] {
				// The two nodes read different heights: read again from node0.
				idx[1], val[1] = idx[0], val[0]
			}
			var wg sync.WaitGroup
			var errs [2]error
			for i, cl := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = cl.KVCAS(ctx, c.Operator.Private, counter, []byte(strconv.Itoa(val[i]+1)), 0, idx[i])
				}()
			}
			wg.Wait()
			won := 0
			for i, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, api.ErrConflict):
					t.Fatalf("round %d client %d: %v", round, i, err)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d winners (%v)", round, won, errs)
			}
			c.WaitFor("the counter's new value on both nodes", Patience, func(ctx context.Context) (bool, error) {
				for _, cl := range clients {
					kv, _, err := cl.KVGet(ctx, counter, nil)
					if err != nil || kv == nil {
						return false, err
					}
					if string(kv.Value) != strconv.Itoa(round) {
						return false, fmt.Errorf("value %q", kv.Value)
					}
				}
				return true, nil
			})
		}
		c.CheckInvariants(ctx)
	})

	t.Run("health --near --tag --meta: agreed-passing instances by the agreed latency from a datacenter", func(t *testing.T) {
		c.t = t
		// db-1 in dc1, db-2 in dc2 behind a slow target (120 ms), db-3 in
		// dc3 behind a faster one (30 ms): from dc1, db-1 (its own dc),
		// then db-3, then db-2, although dc2 sorts before dc3. db-4 lacks
		// the tag, db-5 the version; db-6 is down.
		slow, fast, down := delayedTarget(t, 120*time.Millisecond), delayedTarget(t, 30*time.Millisecond), newTarget(t)
		down.down.Store(true)
		for _, in := range []struct {
			id, dc, url string
			tags        []string
			version     string
		}{
			{"db-1", "dc1", tgB.srv.URL, []string{"primary"}, "2.3.1"},
			{"db-2", "dc2", slow, []string{"primary"}, "2.3.1"},
			{"db-3", "dc3", fast, []string{"primary"}, "2.3.1"},
			{"db-4", "dc1", tgB.srv.URL, []string{"replica"}, "2.3.1"},
			{"db-5", "dc1", tgB.srv.URL, []string{"primary"}, "2.2.0"},
			{"db-6", "dc1", down.srv.URL, []string{"primary"}, "2.3.1"},
		} {
			si := types.ServiceInstance{Name: "db", Id: in.id, Address: "127.0.0.1", Port: 5432, Datacenter: in.dc, Tags: in.tags,
				Meta: []types.Pair{{Key: "version", Value: in.version}}, Checks: []types.Check{{
					Id: "http", Kind: "http", Http: &types.HTTPParams{Url: in.url + "/health"},
					IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000, ConfirmMs: 1000,
				}}}
			if res, err := n0.Client.Register(ctx, c.Operator.Private, si); err != nil || res.Code != 0 {
				t.Fatalf("register %s: %+v %v", si.Id, res, err)
			}
		}
		var got []api.Instance
		c.WaitFor("bftmon health db --near dc1 --tag primary --meta version=2.3.1: db-1, db-3, db-2 with distances", Patience, func(ctx context.Context) (bool, error) {
			cmd := exec.Command(c.bin, "health", "db", "--near", "dc1", "--tag", "primary", "--meta", "version=2.3.1", "--passing",
				"--addr", n3.HTTPAddr, "-o", "json")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				return false, fmt.Errorf("%v: %s %s", err, out, stderr.Bytes())
			}
			got = nil
			if err := json.Unmarshal(out, &got); err != nil {
				return false, err
			}
			var ids []string
			for _, in := range got {
				ids = append(ids, in.ID)
			}
			if fmt.Sprint(ids) != "[db-1 db-3 db-2]" {
				return false, fmt.Errorf("order %v", ids)
			}
			for _, in := range got {
				if in.DistanceMs == nil {
					return false, fmt.Errorf("%s has no distance yet", in.ID)
				}
			}
			return true, nil
		})
		d1, d3, d2 := *got[0].DistanceMs, *got[1].DistanceMs, *got[2].DistanceMs
		t.Logf("from dc1: db-1 %.1f ms, db-3 (dc3, 30 ms target) %.1f ms, db-2 (dc2, 120 ms target) %.1f ms", d1, d3, d2)
		if d1 != 0 || d3 < 30 || d2 < 120 || d3 >= d2 {
			t.Fatalf("distances %v %v %v: want 0, ≥30, ≥120", d1, d3, d2)
		}
	})
}

// TestLockFailoverWithAValidatorDown runs the election of TestLockElection
// on a 4-node network with the consensus timeouts of `bftmon init` (propose
// 3 s), where a crashed validator makes every round it proposes time out
// and leaves gaps of about 5 s between blocks: a leader's target failing
// moves the lock as fast with one validator down as with all four up, and
// a holder that dies without a word loses its session within its TTL +
// app.HaltGapMs of chain time (issue 22: with a 3 s halt rule its 10 s
// session was still alive after 59 s, renewed by every failed round).
func TestLockFailoverWithAValidatorDown(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	c.InitTimeouts()
	c.StartAll()
	n0, n1, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[3]
	tgA, tgB := newTarget(t), newTarget(t)
	registerWeb(ctx, t, c, n0, tgA, tgB)
	passing := func(id string) {
		c.WaitFor(id+" agreed passing", Patience, func(ctx context.Context) (bool, error) {
			ch, err := webInstanceCheck(ctx, n0, id)
			return err == nil && ch.HardStatus == "passing", err
		})
	}
	waiting := func(ct *contender) {
		c.WaitFor(ct.name+" to have its session and wait", Patience, func(ctx context.Context) (bool, error) {
			return bytes.Contains([]byte(ct.output()), []byte("waiting for")), fmt.Errorf("%s: %q", ct.name, ct.output())
		})
	}
	leads := func(ct *contender) {
		c.WaitFor(ct.name+" to acquire the lock and start its command", 2*Patience, func(ctx context.Context) (bool, error) {
			return ct.session() != "" && ct.running(), fmt.Errorf("%s: %q", ct.name, ct.output())
		})
	}
	exits := func(ct *contender) {
		select {
		case <-ct.exited:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not exit after losing the lock:\n%s", ct.name, ct.output())
		}
	}
	// failover fails tg, whose instance holds the lock, and returns how
	// long until next's command started.
	failover := func(tg *target, next *contender) time.Duration {
		down := time.Now()
		tg.down.Store(true)
		leads(next)
		return next.started(t).Sub(down)
	}
	const key = "locks/web-leader"
	passing("web-1")
	passing("web-2")
	a := startContender(t, c, n0, "A", key, "web/web-1")
	leads(a)
	b := startContender(t, c, n1, "B", key, "web/web-2")
	waiting(b)
	allUp := failover(tgA, b)
	exits(a)

	tgA.down.Store(false)
	passing("web-1")
	cc := startContender(t, c, n0, "C", key, "web/web-1")
	waiting(cc)
	n3.Kill()
	from := n0.Height(ctx)
	c.WaitFor("three blocks without node3", Patience, func(ctx context.Context) (bool, error) {
		return n0.Height(ctx) >= from+3, nil
	})
	oneDown := failover(tgB, cc)
	exits(b)
	t.Logf("failover (target down → the new holder's command started; confirm 1 s, lock-delay 3 s, bftmon init's timeouts): all four validators up %s, one down %s",
		allUp.Round(10*time.Millisecond), oneDown.Round(10*time.Millisecond))

	// C dies without a word: its 10 s session must end by its TTL
	// although rounds keep failing, and D takes over.
	tgB.down.Store(false)
	passing("web-2")
	d := startContender(t, c, n1, "D", key, "web/web-2")
	waiting(d)
	before, err := n0.Client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crashed := time.Now()
	cc.crash(t)
	var ended api.Status
	gaps := maxGap{}
	c.WaitFor("C's session to end by its TTL with node3 down", 2*Patience, func(ctx context.Context) (bool, error) {
		st, err := n0.Client.Status(ctx)
		if err != nil {
			return false, err
		}
		gaps.see(st)
		s, _, err := n0.Client.SessionInfo(ctx, cc.session(), nil)
		if err != nil {
			return false, err
		}
		if s != nil {
			return false, fmt.Errorf("C's session alive at block time %s, %s after the last block before C died", st.BlockTime.Format(time.TimeOnly), st.BlockTime.Sub(before.BlockTime).Round(time.Millisecond))
		}
		ended = st
		return true, nil
	})
	// C renewed at the latest just before it died, so its session's
	// deadline is at most TTL after that block: it ends at the first
	// block at or past the deadline, within HaltGapMs of it (and the
	// status read may come a block after the end).
	age := ended.BlockTime.Sub(before.BlockTime)
	if bound := 10*time.Second + app.HaltGapMs*time.Millisecond + 2*time.Second; age > bound {
		t.Fatalf("C's session ended %s of chain time after C died, past TTL 10 s + HaltGapMs + a block", age)
	}
	leads(d)
	t.Logf("dead holder, one of four validators down: C killed → its session ended %s of chain time later → D's command started %s after the kill (ttl 10 s, lock-delay 3 s; longest gap between blocks seen %s)",
		age.Round(10*time.Millisecond), d.started(t).Sub(crashed).Round(10*time.Millisecond), gaps.max.Round(10*time.Millisecond))
	l, _, err := n0.Client.Lock(ctx, key, nil)
	if err != nil || l.Session != d.session() || l.Instance != "web-2" {
		t.Fatalf("holder %+v (%v), want D's session for web-2", l, err)
	}
}

// maxGap tracks the longest gap between the block times of the statuses
// seen.
type maxGap struct {
	last time.Time
	h    int64
	max  time.Duration
}

func (g *maxGap) see(st api.Status) {
	if st.Height == g.h+1 && !g.last.IsZero() {
		g.max = max(g.max, st.BlockTime.Sub(g.last))
	}
	g.last, g.h = st.BlockTime, st.Height
}

// delayedTarget is an HTTP target answering 200 after d; its URL.
func delayedTarget(t *testing.T, d time.Duration) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(d) // the target's own latency, which the observers measure
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// webInstanceCheck is the agreed state of one web instance's check.
// registerWeb registers web-1, web-2, … through n, one http check each on
// the targets in turn (ttl 3 s, confirm 1 s).
func registerWeb(ctx context.Context, t *testing.T, c *Cluster, n *Node, tgs ...*target) {
	t.Helper()
	for i, tg := range tgs {
		in := types.ServiceInstance{Name: "web", Id: fmt.Sprintf("web-%d", i+1), Address: "127.0.0.1", Port: 8080 + uint32(i), Checks: []types.Check{{
			Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tg.srv.URL + "/health"},
			IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000, ConfirmMs: 1000,
		}}}
		if res, err := n.Client.Register(ctx, c.Operator.Private, in); err != nil || res.Code != 0 {
			t.Fatalf("register %s: %+v %v", in.Id, res, err)
		}
	}
}

func webInstanceCheck(ctx context.Context, n *Node, id string) (api.Check, error) {
	insts, _, err := n.Client.Service(ctx, "web", nil)
	if err != nil {
		return api.Check{}, err
	}
	for _, in := range insts {
		if in.ID == id && len(in.Checks) == 1 {
			return in.Checks[0], nil
		}
	}
	return api.Check{}, fmt.Errorf("no %s in %+v", id, insts)
}
