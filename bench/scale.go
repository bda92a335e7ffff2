package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// ScaleConfig sizes the scaling benchmark.
type ScaleConfig struct {
	Self     string        // the bftmon binary, run as each node's process
	Nodes    []int         // network sizes, each measured in turn
	Checks   []int         // checks per network (every observer reports each)
	Interval time.Duration // how often each observer reports each check
	Duration time.Duration // measured, after one interval of warm-up
}

// scaleRow is one measured network.
type scaleRow struct {
	nodes, checks    int
	asked, committed float64 // observations per second
	cpuPer1000       float64 // CPU-seconds of all nodes per 1,000 committed observations
	cpuCores         float64 // CPU of all nodes, in cores
	rssMax           int64   // the largest node's RSS at the end
	bytesPerBlock    float64 // bytes of observation batches the mempool took, per block
	interval         time.Duration
	notFresh         int // checks whose verdict is not passing at the end
	alerts           int // alerts committed while measuring (none is wanted: nothing changed)
}

// Scale measures committed observations on bftmon networks of each size in
// cfg.Nodes holding each count of cfg.Checks passive checks, fed by a load
// generator that signs and batches with every node's observer key exactly
// as the node's own observer does: every second, each observer reports the
// checks due in that second (each check once per interval), in batches of
// at most app.MaxBatch, to its own node's mempool. Probing is left out (it
// measures the machine, not bftmon; `bench observer` measures it). It
// prints one line per network and a table at the end.
func Scale(ctx context.Context, w io.Writer, cfg ScaleConfig) error {
	var rows []scaleRow
	for _, n := range cfg.Nodes {
		for _, checks := range cfg.Checks {
			fmt.Fprintf(w, "scale: %d node(s), %d checks every %s...\n", n, checks, cfg.Interval)
			r, err := scaleOne(ctx, w, cfg, n, checks)
			if err != nil {
				return fmt.Errorf("scale bench, %d nodes, %d checks: %w", n, checks, err)
			}
			rows = append(rows, r)
			fmt.Fprintf(w, "%d node(s) %6d checks: asked %7.0f obs/s, committed %7.0f obs/s, %.3f CPU-s per 1,000 (%.0f%% of a core), RSS max %s, %.0f KiB/block, a block every %s, %d checks not passing at the end, %d alerts while measuring\n",
				n, checks, r.asked, r.committed, r.cpuPer1000, 100*r.cpuCores, mib(r.rssMax), r.bytesPerBlock/1024, r.interval.Round(time.Millisecond), r.notFresh, r.alerts)
		}
	}
	fmt.Fprintf(w, "\n| nodes | checks | obs/s asked | obs/s committed | CPU-s per 1,000 obs | RSS (largest node) | KiB per block | block interval | not passing at end | alerts while measuring |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %d | %.0f | %.0f | %.3f | %s | %.0f | %s | %d | %d |\n",
			r.nodes, r.checks, r.asked, r.committed, r.cpuPer1000, mib(r.rssMax), r.bytesPerBlock/1024, r.interval.Round(time.Millisecond), r.notFresh, r.alerts)
	}
	return nil
}

func scaleOne(ctx context.Context, w io.Writer, cfg ScaleConfig, n, checks int) (scaleRow, error) {
	net, err := startNet(ctx, cfg.Self, n, "bench-scale", false)
	if err != nil {
		return scaleRow{}, err
	}
	defer net.p.stop()
	row := scaleRow{nodes: n, checks: checks}
	// Active checks, so that vouches cover them; no node runs an observer,
	// so only the generator reports.
	ttl := 3 * cfg.Interval
	insts := (checks + app.MaxChecks - 1) / app.MaxChecks
	fmt.Fprintf(w, "  registering %d checks (%d instances)...\n", checks, insts)
	reg := &bftmonKV{chainID: net.chainID, key: net.op.Private, clients: net.clients, hc: kvHTTPClient(), stop: func() {}}
	var next atomic.Int64
	var wg sync.WaitGroup
	var regErr error
	var once sync.Once
	for c := range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < insts; i = int(next.Add(1)) - 1 {
				si := types.ServiceInstance{Name: "bench", Id: fmt.Sprintf("i%05d", i), Address: "127.0.0.1"}
				for j := i * app.MaxChecks; j < min(checks, (i+1)*app.MaxChecks); j++ {
					si.Checks = append(si.Checks, types.Check{Id: fmt.Sprintf("c%02d", j%app.MaxChecks), Kind: "tcp",
						Tcp:        &types.TCPParams{Address: "127.0.0.1:1"},
						IntervalMs: cfg.Interval.Milliseconds(), TimeoutMs: 1000, TtlMs: ttl.Milliseconds()})
				}
				if err := reg.send(ctx, c, types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: si}}}); err != nil {
					once.Do(func() { regErr = fmt.Errorf("register %s: %w", si.Id, err) })
					return
				}
			}
		})
	}
	wg.Wait()
	if regErr != nil {
		return row, regErr
	}
	gen, err := newGenerator(net, checks, cfg.Interval)
	if err != nil {
		return row, err
	}
	gctx, stop := context.WithCancel(ctx)
	defer stop()
	var gwg sync.WaitGroup
	gwg.Go(func() { gen.run(gctx) })
	defer gwg.Wait()
	defer stop()
	fmt.Fprintf(w, "  warming up for %s, then until every check is passing (the first reports are in full)...\n", cfg.Interval)
	if err := sleepCtx(ctx, cfg.Interval); err != nil {
		return row, err
	}
	warm := time.Now()
	if err := waitUntil(ctx, "every check passing", 5*time.Minute, func() error {
		n, err := notPassing(ctx, net.clients[0])
		if err == nil && n > 0 {
			err = fmt.Errorf("%d checks not passing", n)
		}
		return err
	}); err != nil {
		return row, err
	}
	fmt.Fprintf(w, "  every check passing %s after the warm-up interval\n", time.Since(warm).Round(time.Second))
	before, err := sampleNet(ctx, net)
	if err != nil {
		return row, err
	}
	bytes0, vouched0 := gen.accepted.Load(), gen.vouched.Load()
	fmt.Fprintf(w, "  measuring for %s...\n", cfg.Duration)
	if err := sleepCtx(ctx, cfg.Duration); err != nil {
		return row, err
	}
	after, err := sampleNet(ctx, net)
	if err != nil {
		return row, err
	}
	bytes1, vouched1 := gen.accepted.Load(), gen.vouched.Load()
	wall := after.at.Sub(before.at).Seconds()
	obs := after.observations - before.observations + float64(vouched1-vouched0)
	blocks := after.height - before.height
	var cpu time.Duration
	for i := range after.cpu {
		cpu += after.cpu[i] - before.cpu[i]
		row.rssMax = max(row.rssMax, after.rss[i])
	}
	row.asked = float64(n*checks) / cfg.Interval.Seconds()
	row.committed = obs / wall
	if obs > 0 {
		row.cpuPer1000 = cpu.Seconds() / (obs / 1000)
	}
	row.cpuCores = cpu.Seconds() / wall
	if blocks > 0 {
		row.bytesPerBlock = float64(bytes1-bytes0) / float64(blocks)
		row.interval = time.Duration(float64(after.at.Sub(before.at)) / float64(blocks))
	}
	recent, _, err := net.clients[0].Alerts(ctx, &api.QueryOptions{Limit: 1000})
	if err != nil {
		return row, err
	}
	for _, al := range recent {
		if al.Height > before.height {
			row.alerts++
		}
	}
	if row.notFresh, err = notPassing(ctx, net.clients[0]); err != nil {
		fmt.Fprintf(w, "  could not count the checks not passing: %v\n", err)
		row.notFresh = -1
	}
	if n := gen.resyncs.Load(); n > 0 {
		fmt.Fprintf(w, "  %d times an observer's vouch floor rose (a batch went missing or came too late) and it reported everything again\n", n)
	}
	if busy := gen.busy.Load(); busy > 0 {
		fmt.Fprintf(w, "  %d batches refused as the signer's mempool share was full\n", busy)
	}
	return row, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// netSample is what every node of a network has done so far.
type netSample struct {
	at           time.Time
	height       int64
	observations float64 // node0's bftmon_observations_committed_total
	cpu          []time.Duration
	rss          []int64
}

func sampleNet(ctx context.Context, net *bftmonNet) (netSample, error) {
	s := netSample{at: time.Now()}
	st, err := net.clients[0].Status(ctx)
	if err != nil {
		return s, err
	}
	s.height = st.Height
	if s.observations, err = metricValue(ctx, net.nodes[0].HTTPAddr, "bftmon_observations_committed_total"); err != nil {
		return s, err
	}
	for _, c := range net.p.cmds {
		cpu, rss := procUsage(c.Process.Pid)
		s.cpu, s.rss = append(s.cpu, cpu), append(s.rss, rss)
	}
	return s, nil
}

// metricValue reads one unlabelled metric from a node's /metrics.
func metricValue(ctx context.Context, addr, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	bz, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(bz), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no metric %s", addr, name)
}

// procUsage is a process's CPU time (user + system) and RSS, from /proc.
func procUsage(pid int) (time.Duration, int64) {
	var cpu time.Duration
	if bz, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces): utime and
		// stime are the 12th and 13th, in clock ticks of 1/100 s.
		if i := bytes.LastIndexByte(bz, ')'); i > 0 {
			f := strings.Fields(string(bz[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * 10 * time.Millisecond
			}
		}
	}
	var rss int64
	if bz, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(bz), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rss = kb << 10
			}
		}
	}
	return cpu, rss
}

// notPassing counts the checks of service bench whose verdict is not
// passing (stale, pending, disputed) on a node.
func notPassing(ctx context.Context, c *api.Client) (int, error) {
	// Only the instances with a check not passing: the whole service at
	// 50,000 checks is a large answer.
	insts, _, err := c.Service(ctx, "bench", &api.QueryOptions{Status: []string{"stale", "disputed", "pending", "critical", "warning", "unknown"}})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, in := range insts {
		for _, ck := range in.Checks {
			if ck.Status != "passing" {
				n++
			}
		}
	}
	return n, nil
}

// generator reports the bench checks from every observer of a network.
type generator struct {
	chainID  string
	checks   int
	interval time.Duration
	obs      []genObserver
	hc       *http.Client
	accepted atomic.Int64 // bytes of batches the mempools took
	busy     atomic.Int64 // batches refused for a full mempool share
	vouched  atomic.Int64 // unchanged reports left out of batches the mempools took, for their vouch
	resyncs  atomic.Int64 // times an observer's vouch floor rose
}

type genObserver struct {
	key   ed25519.PrivateKey
	rpc   string // the node's CometBFT RPC, host:port
	nonce uint64
	prev  uint64       // the nonce of the last batch the mempool took
	sent  map[int]bool // checks reported once (later reports are vouched for)
	round int          // flushes so far
	id    string       // the observer's id
	api   *api.Client  // its node's API, to read its vouch floor
	floor int64        // the vouch floor last seen
}

// refreshEvery is how many intervals apart the generator reports an
// unchanged check in full, as the observer's scheduler does.
const refreshEvery = 30

func newGenerator(net *bftmonNet, checks int, interval time.Duration) (*generator, error) {
	g := &generator{chainID: net.chainID, checks: checks, interval: interval,
		hc: &http.Client{Timeout: 30 * time.Second}}
	for _, nd := range net.nodes {
		k, err := keys.Load(filepath.Join(nd.Home, node.ObserverKeyFile))
		if err != nil {
			return nil, err
		}
		g.obs = append(g.obs, genObserver{key: k.Private, rpc: nd.RPCAddr, nonce: uint64(time.Now().UnixNano()), sent: map[int]bool{},
			id: k.ID(), api: api.NewClient(nd.HTTPAddr)})
	}
	return g, nil
}

// run sends, every second and from every observer, the checks due in that
// second, until ctx ends.
func (g *generator) run(ctx context.Context) {
	slots := max(1, int(g.interval/time.Second))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for s := 0; ; s++ {
		var wg sync.WaitGroup
		for i := range g.obs {
			wg.Go(func() { g.flush(ctx, &g.obs[i], s%slots, slots) })
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// flush sends observer o's reports of the checks in slot as the observer's
// scheduler does (checks.Config.Vouch): each check in full the first time
// and every refreshEvery-th interval, the rest left out, and a vouch for
// them in the last batch once every check was reported, as of now (every
// check was probed within its interval).
func (g *generator) flush(ctx context.Context, o *genObserver, slot, slots int) {
	now := time.Now().UnixMilli()
	o.round++
	if o.round%5 == 0 {
		g.resync(ctx, o)
	}
	var due []types.Observation
	left := 0 // unchanged reports left out, for the vouch
	for j := slot; j < g.checks; j += slots {
		if o.sent[j] && (o.round/slots+j)%refreshEvery != 0 {
			left++
			continue
		}
		o.sent[j] = true
		due = append(due, types.Observation{Service: "bench", Instance: fmt.Sprintf("i%05d", j/app.MaxChecks), Check: fmt.Sprintf("c%02d", j%app.MaxChecks),
			Status: types.STATUS_PASSING, LatencyUs: 100, ObservedAtMs: now, Output: "ok"})
	}
	vouch := len(o.sent) == g.checks
	for len(due) > 0 || vouch {
		b := &types.ObservationBatch{Observations: due[:min(len(due), app.MaxBatch)], PrevNonce: o.prev}
		due = due[len(b.Observations):]
		last := len(due) == 0
		if last && vouch {
			b.UnchangedAsOfMs = now
		}
		o.nonce++
		tx, err := types.SignTx(g.chainID, o.key, o.nonce, types.Msg{Sum: &types.Msg_Observe{Observe: b}})
		if err != nil {
			return
		}
		code, err := g.broadcast(ctx, o.rpc, tx)
		switch {
		case err != nil:
			// Unknown whether the mempool took it; most likely it did and
			// the node was slow to say so: follow on from it.
			o.prev = o.nonce
			return
		case code == uint32(app.CodeBusy):
			g.busy.Add(1)
			return
		case code == 0:
			g.accepted.Add(int64(len(tx)))
			o.prev = o.nonce
			if last && vouch {
				g.vouched.Add(int64(left))
			}
		default:
			return
		}
		if last {
			return
		}
	}
}

// resync reads o's vouch floor from its node, as node/observer reads its
// stamp: when it rose, every check is reported in full again.
func (g *generator) resync(ctx context.Context, o *genObserver) {
	list, _, err := o.api.Observers(ctx, nil)
	if err != nil {
		return
	}
	for _, ob := range list {
		if ob.ID == o.id && ob.VouchFloorHeight > o.floor {
			o.floor = ob.VouchFloorHeight
			clear(o.sent)
			g.resyncs.Add(1)
		}
	}
}

// broadcast hands tx to a node's mempool (CometBFT's broadcast_tx_sync) and
// returns CheckTx's code.
func (g *generator) broadcast(ctx context.Context, rpc string, tx []byte) (uint32, error) {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "broadcast_tx_sync",
		"params": map[string]string{"tx": base64.StdEncoding.EncodeToString(tx)}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+rpc, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var out struct {
		Result struct {
			Code uint32 `json:"code"`
		} `json:"result"`
		Error *struct {
			Message string `json:"message"`
			Data    string `json:"data"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, err
	}
	if out.Error != nil {
		return 0, fmt.Errorf("broadcast_tx_sync: %s %s", out.Error.Message, out.Error.Data)
	}
	return out.Result.Code, nil
}
