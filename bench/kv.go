package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// KVConfig sizes the key/value benchmark.
type KVConfig struct {
	Self     string        // the bftmon binary, for the 4-node network's processes
	Etcd     string        // the etcd binary ("" skips etcd)
	Clients  []int         // client concurrencies, each measured in turn
	Batch    int           // operations of one batched write (bftmon txn, etcd txn)
	Duration time.Duration // per measured workload and concurrency
	Systems  []string      // which of KVSystems to run (nil: all)
}

// KVSystems are the networks the key/value benchmark compares.
var KVSystems = []string{"bftmon-1", "bftmon-4", "etcd-1", "etcd-3"}

// kvStore is one system under test, as its clients see it.
type kvStore interface {
	// put writes key=value and returns once it is committed.
	put(ctx context.Context, client int, key string, value []byte) error
	// txn writes every key of keys to value atomically, once committed.
	txn(ctx context.Context, client int, keys []string, value []byte) error
	// get reads key (linearizably for etcd, the agreed state for bftmon).
	get(ctx context.Context, client int, key string) error
	// processes are the system's processes (nil: it runs in this one).
	processes() *procs
	close()
}

// idleCPU is what p's processes use, in cores, over d with no client.
func idleCPU(ctx context.Context, p *procs, d time.Duration) (float64, error) {
	total := func() time.Duration {
		var t time.Duration
		for _, c := range p.cmds {
			cpu, _ := procUsage(c.Process.Pid)
			t += cpu
		}
		return t
	}
	t0, start := total(), time.Now()
	if err := sleepCtx(ctx, d); err != nil {
		return 0, err
	}
	return (total() - t0).Seconds() / time.Since(start).Seconds(), nil
}

// KV starts each system on loopback in temporary directories (bftmon's
// dev-like one-node network, a 4-node `bftmon testnet`, etcd alone and a
// 3-member etcd cluster), and for each client concurrency measures
// committed single puts per second, batched puts (a txn of cfg.Batch
// sets) and reads per second, printing one line each and a table at the
// end. Every process it starts is killed before it returns.
func KV(ctx context.Context, w io.Writer, cfg KVConfig) error {
	if cfg.Batch < 1 || cfg.Batch > 64 {
		return fmt.Errorf("kv bench: batch %d: want 1..64 (bftmon's txn limit)", cfg.Batch)
	}
	systems := cfg.Systems
	if len(systems) == 0 {
		systems = KVSystems
	}
	type row struct {
		system  string
		clients int
		puts    float64
		p50     time.Duration // of one put
		p99     time.Duration
		batched float64
		reads   float64
	}
	var rows []row
	value := bytes.Repeat([]byte("v"), 64)
	for _, sys := range systems {
		fmt.Fprintf(w, "kv: starting %s...\n", sys)
		st, err := startKV(ctx, sys, cfg)
		if err != nil {
			return fmt.Errorf("kv bench: start %s: %w", sys, err)
		}
		err = func() error {
			defer st.close()
			if err := st.put(ctx, 0, "bench/read", value); err != nil {
				return fmt.Errorf("%s: first put: %w", sys, err)
			}
			if p := st.processes(); p != nil {
				cores, err := idleCPU(ctx, p, 10*time.Second)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%-9s idle: %.1f%% of one core, all its processes together, over 10 s with no client\n", sys, 100*cores)
			}
			for _, n := range cfg.Clients {
				r := row{system: sys, clients: n}
				puts, err := load(ctx, n, cfg.Duration, func(c, i int) error {
					return st.put(ctx, c, fmt.Sprintf("bench/%d/%d", c, i%64), value)
				})
				if err != nil {
					return fmt.Errorf("%s put, %d clients: %w", sys, n, err)
				}
				r.puts, r.p50, r.p99 = puts.rate, puts.p50, puts.p99
				fmt.Fprintf(w, "%-9s %2d clients  put            %8.1f puts/s  p50 %s p99 %s\n", sys, n, r.puts, ms(r.p50), ms(r.p99))
				txns, err := load(ctx, n, cfg.Duration, func(c, i int) error {
					ks := make([]string, cfg.Batch)
					for j := range ks {
						ks[j] = fmt.Sprintf("bench/%d/b%d", c, j)
					}
					return st.txn(ctx, c, ks, value)
				})
				if err != nil {
					return fmt.Errorf("%s txn, %d clients: %w", sys, n, err)
				}
				r.batched = txns.rate * float64(cfg.Batch)
				fmt.Fprintf(w, "%-9s %2d clients  txn of %-2d     %8.1f puts/s (%.1f txns/s)\n", sys, n, cfg.Batch, r.batched, txns.rate)
				reads, err := load(ctx, n, cfg.Duration, func(c, _ int) error {
					return st.get(ctx, c, "bench/read")
				})
				r.reads = reads.rate
				switch {
				case errors.Is(err, errNoKVRoute):
					r.reads = -1
					fmt.Fprintf(w, "%-9s %2d clients  get            n/a (this build has no GET /v1/kv route)\n", sys, n)
				case err != nil:
					return fmt.Errorf("%s get, %d clients: %w", sys, n, err)
				default:
					fmt.Fprintf(w, "%-9s %2d clients  get            %8.1f reads/s\n", sys, n, r.reads)
				}
				rows = append(rows, r)
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("kv bench: %w", err)
		}
	}
	fmt.Fprintf(w, "\n| system | clients | puts/s | put p50 | put p99 | puts/s in txns of %d | reads/s |\n|---|---|---|---|---|---|---|\n", cfg.Batch)
	for _, r := range rows {
		reads := fmt.Sprintf("%.0f", r.reads)
		if r.reads < 0 {
			reads = "n/a"
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %s | %s | %.0f | %s |\n", r.system, r.clients, r.puts, ms(r.p50), ms(r.p99), r.batched, reads)
	}
	return nil
}

// callStats is what load measured: completed calls per second and the
// latency of one call at the 50th and 99th percentiles.
type callStats struct {
	rate     float64
	p50, p99 time.Duration
}

// load runs n clients calling op in a loop for d and returns the
// completed calls per second and their latencies; the first error stops it.
func load(ctx context.Context, n int, d time.Duration, op func(client, i int) error) (callStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	lat := make([][]time.Duration, n) // per client, so no lock is needed
	start := time.Now()
	stop := start.Add(d)
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop) && ctx.Err() == nil; i++ {
				t0 := time.Now()
				if err := op(c, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return callStats{}, first
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return callStats{rate: float64(len(all)) / time.Since(start).Seconds(), p50: quantile(all, 0.5), p99: quantile(all, 0.99)}, nil
}

func startKV(ctx context.Context, sys string, cfg KVConfig) (kvStore, error) {
	switch sys {
	case "bftmon-1":
		bn, err := startNode(ctx, 0) // bftmon init's defaults
		if err != nil {
			return nil, err
		}
		return &bftmonKV{chainID: "bench", key: bn.op.Private, clients: []*api.Client{bn.c}, hc: kvHTTPClient(), stop: bn.stop}, nil
	case "bftmon-4":
		net, err := startBftmonNet(ctx, cfg.Self, 4, "bench-kv")
		if err != nil {
			return nil, err
		}
		return &bftmonKV{chainID: net.chainID, key: net.op.Private, clients: net.clients, hc: kvHTTPClient(), stop: net.p.stop, procs: net.p}, nil
	case "etcd-1", "etcd-3":
		if cfg.Etcd == "" {
			return nil, errors.New("no etcd binary: apt-get install etcd-server")
		}
		return startEtcd(ctx, cfg.Etcd, map[string]int{"etcd-1": 1, "etcd-3": 3}[sys])
	}
	return nil, fmt.Errorf("unknown system %q (want one of %s)", sys, strings.Join(KVSystems, ", "))
}

// kvHTTPClient keeps a connection per client open.
func kvHTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 1024}}
}

// bftmonKV writes by signed KV transactions on POST /v1/txs (which answers
// once the transaction is committed) and reads GET /v1/kv/KEY. Client c
// talks to node c mod the nodes.
type bftmonKV struct {
	chainID string
	key     ed25519.PrivateKey
	clients []*api.Client
	hc      *http.Client
	nonce   atomic.Uint64
	stop    func()
	procs   *procs // the nodes' processes (nil: one node in this process)
}

func (b *bftmonKV) close() { b.stop() }

func (b *bftmonKV) processes() *procs { return b.procs }

func (b *bftmonKV) send(ctx context.Context, client int, msg types.Msg) error {
	b.nonce.CompareAndSwap(0, uint64(time.Now().UnixNano()))
	tx, err := types.SignTx(b.chainID, b.key, b.nonce.Add(1), msg)
	if err != nil {
		return err
	}
	res, err := b.clients[client%len(b.clients)].BroadcastTx(ctx, tx)
	if err != nil {
		return err
	}
	if res.Code != 0 {
		return fmt.Errorf("refused (code %d): %s", res.Code, res.Log)
	}
	return nil
}

func (b *bftmonKV) put(ctx context.Context, client int, key string, value []byte) error {
	return b.send(ctx, client, types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: key, Value: value}}})
}

func (b *bftmonKV) txn(ctx context.Context, client int, keys []string, value []byte) error {
	ops := make([]types.KVOp, len(keys))
	for i, k := range keys {
		ops[i] = types.KVOp{Verb: "set", Key: k, Value: value}
	}
	return b.send(ctx, client, types.Msg{Sum: &types.Msg_KvTxn{KvTxn: &types.KVTxn{Ops: ops}}})
}

// errNoKVRoute is a node without the GET /v1/kv/KEY route (a build from
// before it).
var errNoKVRoute = errors.New("the node has no GET /v1/kv route")

func (b *bftmonKV) get(ctx context.Context, client int, key string) error {
	err := httpDo(ctx, b.hc, http.MethodGet, b.clients[client%len(b.clients)].Addr()+"/v1/kv/"+key, nil)
	if err != nil && strings.Contains(err.Error(), "no route GET") {
		return fmt.Errorf("%w: %v", errNoKVRoute, err)
	}
	return err
}

// httpDo sends a request and drains the answer, which must be a 200.
func httpDo(ctx context.Context, hc *http.Client, method, u string, body []byte) error {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	bz, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d: %.200s", method, u, resp.StatusCode, bz)
	}
	// etcd's gateway answers errors of a request with 200 and an error body.
	if bytes.HasPrefix(bz, []byte(`{"error"`)) {
		return fmt.Errorf("%s %s: %.200s", method, u, bz)
	}
	return nil
}

// procs is a set of child processes with their temporary directory.
type procs struct {
	dir  string
	cmds []*exec.Cmd
}

func (p *procs) start(log string, name string, args ...string) error {
	f, err := os.Create(filepath.Join(p.dir, log))
	if err != nil {
		return err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p.cmds = append(p.cmds, cmd)
	return nil
}

// stop kills every process (and its group), waits for them, and removes
// the directory.
func (p *procs) stop() {
	for _, c := range p.cmds {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	for _, c := range p.cmds {
		_ = c.Wait()
	}
	os.RemoveAll(p.dir)
}

// tail is the end of one of the processes' logs, for an error.
func (p *procs) tail(log string) string {
	bz, _ := os.ReadFile(filepath.Join(p.dir, log))
	if len(bz) > 2000 {
		bz = bz[len(bz)-2000:]
	}
	return string(bz)
}

// freePorts finds a base port whose n ports are free on 127.0.0.1.
func freePorts(n int) (int, error) {
	for try := 0; try < 100; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		base := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		base -= base % 10
		if base < 20000 || base+n > 65000 {
			continue
		}
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, fmt.Errorf("no %d free ports in a row on 127.0.0.1", n)
}

// waitUntil calls cond every 100 ms until it is true, for up to d.
func waitUntil(ctx context.Context, what string, d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waited %s for %s: %w", d, what, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// bftmonNet is an n-node `bftmon testnet` whose nodes run as processes.
type bftmonNet struct {
	p       *procs
	nodes   []node.TestnetNode
	clients []*api.Client
	op      keys.Key
	chainID string
}

// startBftmonNet writes an n-node `bftmon testnet` in a temporary
// directory and runs each node as a process of self, waiting until every
// node commits.
func startBftmonNet(ctx context.Context, self string, n int, chainID string) (*bftmonNet, error) {
	return startNet(ctx, self, n, chainID, true)
}

// startNet is startBftmonNet; without observers, no node runs its own (a
// load generator signs with their keys instead).
func startNet(ctx context.Context, self string, n int, chainID string, observers bool) (*bftmonNet, error) {
	dir, err := os.MkdirTemp("", "bftmon-bench-net-")
	if err != nil {
		return nil, err
	}
	p := &procs{dir: dir}
	base, err := freePorts(10 * n)
	if err != nil {
		p.stop()
		return nil, err
	}
	nodes, err := node.Testnet(node.TestnetOptions{Nodes: n, Datacenters: min(n, 2), Out: dir, BasePort: base, ChainID: chainID})
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("testnet: %w", err)
	}
	op, err := keys.Load(filepath.Join(dir, "operator_key.json"))
	if err != nil {
		p.stop()
		return nil, err
	}
	net := &bftmonNet{p: p, nodes: nodes, op: op, chainID: chainID}
	for _, nd := range nodes {
		if addr := os.Getenv("BFTMON_BENCH_PPROF"); addr != "" && nd.Name == nodes[0].Name {
			// A profiling aid: CometBFT serves net/http/pprof on the first node.
			cfgFile := filepath.Join(nd.Home, "config", "config.toml")
			bz, err := os.ReadFile(cfgFile)
			if err == nil {
				bz = []byte(strings.Replace(string(bz), `pprof_laddr = ""`, fmt.Sprintf("pprof_laddr = %q", addr), 1))
				err = os.WriteFile(cfgFile, bz, 0o600)
			}
			if err != nil {
				p.stop()
				return nil, err
			}
		}
		if !observers {
			st, err := node.ReadSettings(nd.Home)
			if err == nil {
				st.ObserverKey = ""
				err = node.WriteSettings(nd.Home, st)
			}
			if err != nil {
				p.stop()
				return nil, fmt.Errorf("turn off the observer of %s: %w", nd.Name, err)
			}
		}
		if err := p.start(nd.Name+".log", self, "start", "--home", nd.Home, "--log-level", "warn"); err != nil {
			p.stop()
			return nil, err
		}
		net.clients = append(net.clients, api.NewClient(nd.HTTPAddr))
	}
	for i, c := range net.clients {
		if err := waitUntil(ctx, nodes[i].Name+" committing", 90*time.Second, func() error {
			st, err := c.Status(ctx)
			if err == nil && st.Height < 2 {
				err = fmt.Errorf("at height %d", st.Height)
			}
			return err
		}); err != nil {
			err = fmt.Errorf("%w\n%s", err, p.tail(nodes[i].Name+".log"))
			p.stop()
			return nil, err
		}
	}
	return net, nil
}

// etcdKV talks to etcd's v3 JSON gateway (POST /v3/kv/put, /v3/kv/range,
// /v3/kv/txn with base64 keys and values). Ranges are linearizable (the
// default: serializable false). Client c talks to member c mod members.
type etcdKV struct {
	urls []string
	hc   *http.Client
	p    *procs
}

func (e *etcdKV) close() { e.p.stop() }

func (e *etcdKV) processes() *procs { return e.p }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func (e *etcdKV) post(ctx context.Context, client int, path string, body any) error {
	bz, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return httpDo(ctx, e.hc, http.MethodPost, e.urls[client%len(e.urls)]+path, bz)
}

func (e *etcdKV) put(ctx context.Context, client int, key string, value []byte) error {
	return e.post(ctx, client, "/v3/kv/put", map[string]string{"key": b64(key), "value": base64.StdEncoding.EncodeToString(value)})
}

func (e *etcdKV) txn(ctx context.Context, client int, keys []string, value []byte) error {
	var ops []map[string]any
	for _, k := range keys {
		ops = append(ops, map[string]any{"request_put": map[string]string{"key": b64(k), "value": base64.StdEncoding.EncodeToString(value)}})
	}
	return e.post(ctx, client, "/v3/kv/txn", map[string]any{"success": ops})
}

func (e *etcdKV) get(ctx context.Context, client int, key string) error {
	return e.post(ctx, client, "/v3/kv/range", map[string]string{"key": b64(key)})
}

// startEtcd runs an etcd cluster of n members on loopback in a temporary
// directory, with its default settings (fsync on every commit).
func startEtcd(ctx context.Context, bin string, n int) (kvStore, error) {
	dir, err := os.MkdirTemp("", "bftmon-bench-etcd-")
	if err != nil {
		return nil, err
	}
	p := &procs{dir: dir}
	base, err := freePorts(2 * n)
	if err != nil {
		p.stop()
		return nil, err
	}
	var initial []string
	for i := range n {
		initial = append(initial, fmt.Sprintf("m%d=http://127.0.0.1:%d", i, base+2*i+1))
	}
	e := &etcdKV{hc: kvHTTPClient(), p: p}
	for i := range n {
		client, peer := fmt.Sprintf("http://127.0.0.1:%d", base+2*i), fmt.Sprintf("http://127.0.0.1:%d", base+2*i+1)
		name := fmt.Sprintf("m%d", i)
		if err := p.start(name+".log", bin, "--name", name, "--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "bftmon-bench"); err != nil {
			p.stop()
			return nil, err
		}
		e.urls = append(e.urls, client)
	}
	for i, u := range e.urls {
		if err := waitUntil(ctx, "etcd member "+u, 60*time.Second, func() error {
			return httpDo(ctx, e.hc, http.MethodPost, u+"/v3/kv/range", []byte(`{"key":"`+b64("x")+`"}`))
		}); err != nil {
			err = fmt.Errorf("%w\n%s", err, p.tail(fmt.Sprintf("m%d.log", i)))
			p.stop()
			return nil, err
		}
	}
	return e, nil
}

// ms writes a latency in milliseconds, to 0.1 ms.
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
