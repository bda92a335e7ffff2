package cluster

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/verify"
)

// nemesisModes are the observer misbehaviours the real-process nemesis
// draws from (flood and stuff-blocks are left to their own tests: on two
// cores they measure load, not lies).
var nemesisModes = []string{node.ByzAlwaysCritical, node.ByzAlwaysPassing, node.ByzInvert, node.ByzRandom,
	node.ByzReplay, node.ByzEquivocate, node.ByzGarbage, node.ByzForgeReceipts}

// truthLog is the ground truth of a target: when it went up or down.
type truthLog struct {
	mu    sync.Mutex
	times []time.Time
	down  []bool
}

func (l *truthLog) set(down bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.times, l.down = append(l.times, time.Now()), append(l.down, down)
}

// had tells whether the target was in status st ("passing" up,
// "critical" down; "warning" counts as down, as the verdict rule's
// warning-or-critical quorum does) at some moment of [from, to].
func (l *truthLog) had(st string, from, to time.Time) bool {
	if st == "warning" {
		st = "critical"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.times {
		end := time.Now().Add(time.Hour)
		if i+1 < len(l.times) {
			end = l.times[i+1]
		}
		if l.times[i].After(to) || end.Before(from) {
			continue
		}
		if (st == "critical") == l.down[i] {
			return true
		}
	}
	return false
}

// TestNemesisProcesses is the real-process half of docs/GUARANTEES.md's
// nemesis: a real 4-node network in which one random node (never node0,
// the reference) runs a random --byzantine observer mode, perhaps with a
// lying API too, and later crashes (the fault stays on one node: with four
// observers of weight 1, one is all the model tolerates). A target goes up
// and down at random while a verifying client reads the check through the
// faulty node (while it runs) and node0, and a session of the instance
// holds a lock. Checked against the ground truth: every state_change
// alert is to a status the target really had shortly before (V1); every
// up or down period of the target long enough to confirm shows up as the
// agreed hard state (V2); every verified answer is consistent with the
// truth and verified heights never go back (R1, R2); the lock's session
// ends after the target has been down long enough (L1); and at the end
// the app hashes agree and every alert is justified (D1). The seed is
// BFTMON_NEMESIS_SEED or drawn, and logged.
func TestNemesisProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BFTMON_NEMESIS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	faulty := 1 + rng.IntN(3)
	mode := nemesisModes[rng.IntN(len(nemesisModes))]
	if rng.IntN(2) == 0 {
		mode += "," + node.ByzLyingAPI
	}
	t.Logf("nemesis seed %d (BFTMON_NEMESIS_SEED=%d reruns it): node%d runs --byzantine=%s, then crashes", seed, seed, faulty, mode)

	ctx := context.Background()
	c := New(t, 4, 2)
	n0, bad := c.Nodes[0], c.Nodes[faulty]
	for i, n := range c.Nodes {
		if i == faulty {
			n.Start("--byzantine=" + mode)
		} else {
			n.Start()
		}
	}
	for _, n := range c.Nodes {
		n.WaitUp()
	}
	c.WaitHeight(2)

	tg := newTarget(t)
	truth := &truthLog{}
	truth.set(false)
	registerWeb(ctx, t, c, n0, tg)
	c.WaitFor("web-1 agreed passing", Patience, func(ctx context.Context) (bool, error) {
		ch, err := webInstanceCheck(ctx, n0, "web-1")
		return err == nil && ch.HardStatus == "passing", err
	})

	gen, err := cmttypes.GenesisDocFromFile(filepath.Join(n0.Home, "config", "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	headers, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{"http://" + n0.RPCAddr, "http://" + c.Nodes[(faulty+1)%4].RPCAddr}, Genesis: gen})
	if err != nil {
		t.Fatalf("light client: %v", err)
	}
	readers := map[*Node]*verify.Client{n0: verify.NewClient(n0.HTTPAddr, headers), bad: verify.NewClient(bad.HTTPAddr, headers)}

	// A session of web-1 holds the lock while web-1 is healthy.
	lockSession := func() string {
		sid, res, err := n0.Client.SessionCreate(ctx, c.Operator.Private, types.SessionCreate{Service: "web", Instance: "web-1", TtlMs: 60_000, NoLockDelay: true})
		if err != nil || res.Code != 0 {
			t.Fatalf("session: %+v %v", res, err)
		}
		if res, err := n0.Client.KVPut(ctx, c.Operator.Private, types.KVSet{Key: "locks/web", Value: []byte("web-1"), Acquire: sid}); err != nil || res.Code != 0 {
			t.Fatalf("acquire: %+v %v", res, err)
		}
		return sid
	}
	sid := lockSession()

	type sample struct {
		at   time.Time
		hard string
	}
	var samples []sample
	verified, refused := 0, 0
	lastHeight := map[*Node]int64{}
	var mu sync.Mutex // guards samples, verified, refused
	// read reads the check verified through each running node until end:
	// apart from the sampling, as one verified read can take long (the
	// light client fetching a header).
	read := func(end time.Time, running []*Node) {
		pace := time.NewTicker(200 * time.Millisecond) // how often each node is asked
		defer pace.Stop()
		for time.Now().Before(end) {
			<-pace.C
			for _, n := range running {
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				res, err := readers[n].Get(rctx, "/v1/checks/web/web-1/http")
				if err != nil {
					cancel()
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				}
				if res.Height < lastHeight[n] {
					t.Errorf("R1: %s: verified height %d after %d", n.Name, res.Height, lastHeight[n])
				}
				lastHeight[n] = res.Height
				var ch api.Check
				if err := json.Unmarshal(res.Body, &ch); err != nil {
					t.Errorf("R2: %s: verified answer: %v", n.Name, err)
				}
				hdr, err := headers.Header(rctx, res.Height+1)
				cancel()
				if err != nil {
					continue // the answer verified against it: only its time is missing
				}
				mu.Lock()
				verified++
				mu.Unlock()
				if (ch.Status == "passing" || ch.Status == "critical" || ch.Status == "warning") && !truth.had(ch.Status, hdr.Time.Add(-15*time.Second), hdr.Time) {
					t.Errorf("R2: %s: verified at height %d (%s): web-1 %s, which the target was not in the 15 s before", n.Name, res.Height, hdr.Time.Format(time.TimeOnly), ch.Status)
				}
			}
		}
	}
	tick := time.NewTicker(300 * time.Millisecond) // how often the agreed state is sampled
	defer tick.Stop()
	watch := func(d time.Duration, running []*Node) {
		end := time.Now().Add(d)
		done := make(chan struct{})
		go func() {
			defer close(done)
			read(end, running)
		}()
		for time.Now().Before(end) {
			<-tick.C
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if ch, err := webInstanceCheck(rctx, n0, "web-1"); err == nil {
				mu.Lock()
				samples = append(samples, sample{time.Now(), ch.HardStatus})
				mu.Unlock()
			}
			cancel()
		}
		<-done
	}
	periods := []struct {
		from, to time.Time
		down     bool
	}{}
	flip := func(down bool, d time.Duration, running []*Node) {
		tg.down.Store(down)
		truth.set(down)
		from := time.Now()
		watch(d, running)
		periods = append(periods, struct {
			from, to time.Time
			down     bool
		}{from, time.Now(), down})
	}
	// Phase 1: the faulty node lies.
	both := []*Node{n0, bad}
	flip(true, time.Duration(10+rng.IntN(6))*time.Second, both)
	flip(false, time.Duration(10+rng.IntN(6))*time.Second, both)
	sid = lockSession()
	// Phase 2: it crashes; the three others go on.
	bad.Kill()
	flip(true, time.Duration(10+rng.IntN(6))*time.Second, []*Node{n0})
	if s, _, err := n0.Client.SessionInfo(ctx, sid, nil); err != nil || s != nil {
		t.Errorf("L1: web-1 down for 10 s with a node crashed, its session %s still holds the lock (%+v, %v)", sid, s, err)
	}
	flip(false, time.Duration(10+rng.IntN(6))*time.Second, []*Node{n0})

	// V2: each period shows up as the hard state by its end.
	for _, p := range periods {
		want := "passing"
		if p.down {
			want = "critical"
		}
		t.Logf("period: target %s from %s to %s", want, p.from.Format("15:04:05.000"), p.to.Format("15:04:05.000"))
		seen := false
		for _, s := range samples {
			if !s.at.Before(p.from) && !s.at.After(p.to) && s.hard == want {
				seen = true
			}
		}
		if !seen {
			t.Errorf("V2: the target was %s from %s to %s, and the agreed hard state never was", want, p.from.Format(time.TimeOnly), p.to.Format(time.TimeOnly))
		}
	}
	// V1: every state change is to a status the target had just before.
	alerts, _, err := n0.Client.Alerts(ctx, &api.QueryOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	for _, al := range alerts {
		if al.Kind != "state_change" || al.Instance != "web-1" {
			continue
		}
		changes++
		t.Logf("alert %s→%s at height %d, block time %s", al.From, al.To, al.Height, al.Time.Format("15:04:05.000"))
		if !truth.had(al.To, al.Time.Add(-15*time.Second), al.Time) {
			t.Errorf("V1: alert %s→%s at height %d (%s): the target was not %s in the 15 s before", al.From, al.To, al.Height, al.Time.Format(time.TimeOnly), al.To)
		}
	}
	if verified == 0 || changes < 4 {
		t.Errorf("the nemesis exercised too little: %d verified answers, %d state changes", verified, changes)
	}
	c.CheckInvariants(ctx)
	t.Logf("nemesis seed %d, node%d --byzantine=%s then crashed: %d state changes justified, %d verified answers consistent with the truth, %d refused, %d hard-state samples",
		seed, faulty, mode, changes, verified, refused, len(samples))
}
