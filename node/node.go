// Package node assembles one bftmon process: the in-process CometBFT node
// with the ABCI application, the observer (scheduler + signer), and the HTTP
// API. It only wires parts together.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	abcitypes "github.com/cometbft/cometbft/abci/types"
	cmtcfg "github.com/cometbft/cometbft/config"
	cmtnode "github.com/cometbft/cometbft/node"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	"github.com/cometbft/cometbft/proxy"
	rpclocal "github.com/cometbft/cometbft/rpc/client/local"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/dns"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/notify"
	"github.com/bftmon/bftmon/snapshot"
	"github.com/bftmon/bftmon/store"
	"github.com/bftmon/bftmon/txindex"
)

// Config says which home to run and overrides of its settings.
type Config struct {
	Home string
	// HTTPAddr overrides the settings' http_addr when not empty.
	HTTPAddr string
	Logger   *slog.Logger
	// Byzantine makes the observer (or the proposals, or the HTTP API:
	// lying-api) misbehave on purpose (ByzantineModes), for tests of the
	// network's and the clients' tolerance.
	Byzantine []string
	// FaultInjection serves /v1/debug/unreachable, through which tests tell
	// the observer which targets it cannot reach.
	FaultInjection bool

	// DNSAddr overrides the settings' dns_addr when not empty.
	DNSAddr string
	// NoDNS turns the DNS interface off, whatever the settings say.
	NoDNS bool
}

// Node is a running bftmon process.
type Node struct {
	cfg      Config
	settings Settings
	// observeToken is what POST /v1/observe requires (ObserveTokenFile).
	observeToken string
	log          *slog.Logger

	store    *store.Store
	snaps    *snapshot.Manager
	app      *abci.Application
	comet    *cmtnode.Node
	bcast    *broadcaster
	observer *observer
	byz      *byzantine // nil unless Config.Byzantine
	faults   *faults    // nil unless Config.FaultInjection
	metrics  *prometheus.Registry
	// cometMetrics holds CometBFT's own metrics, served beside ours.
	cometMetrics *prometheus.Registry
	http         *http.Server
	httpLn       net.Listener
	// apiSrv is the honest API, which a lying-api node wraps.
	apiSrv   *server.Server
	dns      *dns.Server      // nil without a DNS interface
	notifier *notify.Notifier // nil without receivers
	nodeID   string
	rpcAddr  string
	// txs indexes committed transactions by hash (GET /v1/txs/{hash}).
	txs *txindex.Index

	health   *commitHealth
	stopping atomic.Bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	once     sync.Once
	err      error
}

// Failed is closed when the node can commit no more (CometBFT's consensus
// failed, a full disk being the usual cause); Failure says why. The node
// keeps serving until stopped, saying so on GET /v1/status; bftmon start
// stops it and exits non-zero.
func (n *Node) Failed() <-chan struct{} { return n.health.failedCh }

// Failure is why the node can commit no more (nil while it can).
func (n *Node) Failure() error {
	n.health.mu.Lock()
	defer n.health.mu.Unlock()
	return n.health.failed
}

// Start starts the node in cfg.Home and returns once the HTTP API listens.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	st, err := ReadSettings(cfg.Home)
	if err != nil {
		return nil, err
	}
	if cfg.HTTPAddr != "" {
		st.HTTPAddr = cfg.HTTPAddr
	}
	if cfg.DNSAddr != "" {
		st.DNSAddr = cfg.DNSAddr
	}
	if cfg.NoDNS {
		st.DNSAddr = ""
	}
	ccfg, err := LoadCometConfig(cfg.Home)
	if err != nil {
		return nil, err
	}
	noCometTxIndex(cfg.Home, ccfg, cfg.Logger)
	if err := checkKeyFiles(cfg.Home, ccfg, st, cfg.Logger); err != nil {
		return nil, err
	}
	genesis, err := checkGenesis(ccfg.GenesisFile())
	if err != nil {
		return nil, err
	}
	token, err := EnsureObserveToken(cfg.Home, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if err := checkDisk(cfg.Home); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Home, err)
	}
	if err := waitPeerNames(ctx, splitPeers(ccfg.P2P.PersistentPeers), PeerNameWait, cfg.Logger); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Home, err)
	}
	n := &Node{cfg: cfg, settings: st, observeToken: token, log: cfg.Logger}
	if err := n.start(ctx, ccfg, genesis); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

func (n *Node) start(ctx context.Context, ccfg *cmtcfg.Config, genesis []byte) error {
	var err error
	if n.store, err = store.Open(filepath.Join(n.cfg.Home, AppDataDir)); err != nil {
		return err
	}
	if err := noteGenesis(n.cfg.Home, genesis, n.store.Version(), n.log); err != nil {
		return err
	}
	n.store.SetKeepVersions(n.settings.KeepVersions)
	if n.app, err = abci.New(n.store, n.log); err != nil {
		return err
	}
	if n.snaps, err = snapshot.NewManager(filepath.Join(n.cfg.Home, SnapshotDir), n.store, n.settings.SnapshotInterval, n.log); err != nil {
		return err
	}
	n.app.UseSnapshots(n.snaps)
	n.app.RetainBlocks(n.settings.RetainBlocks)
	nodeKey, err := p2p.LoadOrGenNodeKey(ccfg.NodeKeyFile())
	if err != nil {
		return fmt.Errorf("load node key: %w", err)
	}
	n.nodeID = string(nodeKey.ID())
	n.rpcAddr = ccfg.RPC.ListenAddress
	pv := privval.LoadOrGenFilePV(ccfg.PrivValidatorKeyFile(), ccfg.PrivValidatorStateFile())
	cometProvider, cometReg := cometMetrics(ccfg.Instrumentation)
	n.cometMetrics = cometReg
	n.metrics = newRegistry()
	n.health = newCommitHealth(n.cfg.Home, n.store.Version())
	n.app.OnCommit(n.health.committed)
	if err := n.openTxIndex(); err != nil {
		return err
	}
	appHeight := n.store.Version() // before CometBFT's handshake replays blocks
	var abciApp abcitypes.Application = n.app
	if slices.Contains(n.cfg.Byzantine, ByzStuffBlocks) {
		abciApp = newStuffingApp(n.app, n.metrics, n.log)
	}
	n.comet, err = cmtnode.NewNodeWithContext(ctx, ccfg, pv, nodeKey,
		proxy.NewLocalClientCreator(abciApp),
		cmtnode.DefaultGenesisDocProviderFunc(ccfg),
		cmtcfg.DefaultDBProvider,
		cometProvider,
		newCometLogger(n.log, &n.stopping, n.health.consensusFailed))
	if err != nil {
		return fmt.Errorf("create CometBFT node: %w", err)
	}
	if err := n.comet.Start(); err != nil {
		if ss := ccfg.StateSync; ss.Enable && strings.Contains(err.Error(), "light client") {
			return fmt.Errorf("start CometBFT node: %w (state sync could not trust the header at [statesync] trust_height %d with trust_hash %s in %s: "+
				"compare it with a node of the network you trust, curl http://HOST:26657/commit?height=%d (result.signed_header.commit.block_id.hash), "+
				"check rpc_servers %v answer, or write a fresh home with bftmon join)", err, ss.TrustHeight, ss.TrustHash, filepath.Join(n.cfg.Home, "config", "config.toml"), ss.TrustHeight, ss.RPCServers)
		}
		return fmt.Errorf("start CometBFT node: %w", err)
	}
	n.bcast = newBroadcaster(rpclocal.New(n.comet))
	n.app.OnCommit(n.bcast.committed)

	n.app.OnCommit(newChainMetrics(n.metrics).committed)
	n.metrics.MustRegister(newStateCollector(n.app.Read))
	n.bcast.commitSeconds = newCommitHistogram(n.metrics)
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.fillTxIndex(runCtx, n.bcast.rpc, appHeight)
	}()
	if n.settings.ObserverKey != "" {
		key, err := keys.Load(filepath.Join(n.cfg.Home, n.settings.ObserverKey))
		if err != nil {
			return fmt.Errorf("observer: %w", err)
		}
		if modes := observerModes(n.cfg.Byzantine); len(modes) > 0 {
			n.byz = newByzantine(modes, n.settings.PeerRPC, n.metrics, n.log)
		}
		if n.cfg.FaultInjection {
			n.faults = &faults{}
		}
		n.observer = newObserver(key, n.app, n.bcast, n.settings, newProbeMetrics(n.metrics), n.byz, n.faults, n.log)
		schedulerStats(n.metrics, n.observer.sched.Stats)
		n.app.OnCommit(n.observer.committed)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.observer.run(runCtx)
		}()
	}
	if err := n.startNotifier(runCtx); err != nil {
		return err
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.watchPeers(runCtx, peerProgress)
	}()

	tokens, err := LoadTokens(n.cfg.Home, n.log)
	if err != nil {
		return err
	}
	n.httpLn, err = net.Listen("tcp", n.settings.HTTPAddr)
	if err != nil {
		return fmt.Errorf("HTTP API: listen on %s: %w (is another bftmon running? choose another address with --http)", n.settings.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	apiSrv := server.New(&backend{n: n}, server.Config{ObserveToken: n.observeToken, Tokens: tokens, Limits: n.settings.httpLimits()}, n.log)
	n.httpLn = apiSrv.Limit(n.httpLn)
	n.metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bftmon_http_blocking_queries", Help: "Blocking queries of the HTTP API waiting for a change now.",
	}, func() float64 { return float64(apiSrv.Parked()) }))
	n.metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bftmon_http_connections", Help: "Open connections of the HTTP API (at most http_max_connections).",
	}, func() float64 { return float64(apiSrv.Connections()) }))
	n.metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bftmon_http_body_reads", Help: "Request bodies of the HTTP API being read now (at most http_max_body_reads).",
	}, func() float64 { return float64(apiSrv.BodyReads()) }))
	n.metrics.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "bftmon_http_bodies_refused_total", Help: "Requests with a body answered 503 because the HTTP API was reading as many bodies as it may.",
	}, func() float64 { return float64(apiSrv.BodiesRefused()) }))
	mux.Handle("GET /metrics", metricsHandler(n.metrics, n.cometMetrics))
	if n.faults != nil {
		mux.Handle("/v1/debug/unreachable", n.faults)
	}
	n.app.OnCommit(func(b abci.Block) { apiSrv.Committed(b.Changes) })
	n.apiSrv = apiSrv
	var apiHandler http.Handler = apiSrv
	if slices.Contains(n.cfg.Byzantine, ByzLyingAPI) {
		liar := newLyingAPI(apiSrv, n.metrics, n.log)
		liar.appHash = n.AppHashAt
		apiHandler = liar
	}
	mux.Handle("/", apiHandler)
	n.http = server.HTTPServer(mux)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(n.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("HTTP API stopped", "err", err)
		}
	}()
	if n.settings.DNSAddr != "" {
		// The own datacenter is the observer's, as the committed observer
		// set gives it (as in /v1/status); without an observer, none.
		var observer string
		if n.observer != nil {
			observer = n.observer.key.ID()
		}
		n.dns = dns.New(&backend{n: n}, dns.Config{Addr: n.settings.DNSAddr, Observer: observer, Registerer: n.metrics}, n.log)
		if err := n.dns.Start(ctx); err != nil {
			return fmt.Errorf("%w (is another bftmon or Consul running? choose another address with --dns, or --dns '' for none)", err)
		}
	}
	n.log.Info("node started", "home", n.cfg.Home, "chain_id", n.app.ChainID(), "http", n.HTTPAddr(), "dns", n.DNSAddr(), "height", n.store.Version())
	return nil
}

// HTTPAddr is the address the HTTP API listens on.
func (n *Node) HTTPAddr() string {
	if n.httpLn == nil {
		return n.settings.HTTPAddr
	}
	return n.httpLn.Addr().String()
}

// DNSAddr is the address the DNS interface listens on (UDP and TCP), or ""
// if the node has none.
func (n *Node) DNSAddr() string {
	if n.dns == nil {
		return n.settings.DNSAddr
	}
	return n.dns.Addr()
}

// RPCURL is the http URL of CometBFT's RPC.
func (n *Node) RPCURL() string {
	return strings.Replace(n.rpcAddr, "tcp://", "http://", 1)
}

// Height is the last committed height.
func (n *Node) Height() int64 { return n.store.Version() }

// AppHash is the app hash of the last committed height.
func (n *Node) AppHash() []byte { return n.store.Hash() }

// AppHashAt is the app hash the application committed at height.
func (n *Node) AppHashAt(height int64) ([]byte, error) {
	r, err := n.store.Reader(height)
	if err != nil {
		return nil, err
	}
	return r.Hash(), nil
}

// HeaderAppHash is the app hash that the block header at height carries:
// the app hash after height-1, as agreed by consensus.
func (n *Node) HeaderAppHash(ctx context.Context, height int64) ([]byte, error) {
	blk, err := n.bcast.rpc.Block(ctx, &height)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", height, err)
	}
	return blk.Block.AppHash, nil
}

// ChainID is the network's chain id.
func (n *Node) ChainID() string { return n.app.ChainID() }

// Stop stops everything and closes the databases. It is safe to call more
// than once.
func (n *Node) Stop() error {
	n.once.Do(func() {
		n.stopping.Store(true)
		var errs []error
		if n.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, n.http.Shutdown(ctx))
			cancel()
		}
		if n.dns != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs = append(errs, n.dns.Shutdown(ctx))
			cancel()
		}
		if n.cancel != nil {
			n.cancel()
		}
		n.wg.Wait()
		if n.comet != nil && n.comet.IsRunning() {
			if err := n.comet.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop CometBFT: %w", err))
			}
			n.comet.Wait()
		}
		if n.snaps != nil {
			n.snaps.Wait() // a snapshot being written reads the store
		}
		if n.txs != nil { // after CometBFT: its commits feed the index
			errs = append(errs, n.txs.Close())
		}
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		n.err = errors.Join(errs...)
		n.log.Info("node stopped", "home", n.cfg.Home)
	})
	return n.err
}

// OnCommit registers f to see every block this node commits from now on,
// after the block's state is saved.
func (n *Node) OnCommit(f func(abci.Block)) { n.app.OnCommit(f) }

// startNotifier starts alert delivery if the settings name receivers.
func (n *Node) startNotifier(ctx context.Context) error {
	if len(n.settings.notify.Receivers) == 0 {
		return nil
	}
	o := notify.Options{
		Config: n.settings.notify, Dir: filepath.Join(n.cfg.Home, "data"), Chain: n.app,
		// A lying node keeps quiet about alerts, unless it forges their bodies.
		Silent:       len(n.cfg.Byzantine) > 0 && !slices.Contains(n.cfg.Byzantine, ByzForgeBodies),
		GeneratorURL: "http://" + n.settings.HTTPAddr, Registerer: n.metrics, Logger: n.log,
		Syncing: func() bool { return n.comet.ConsensusReactor().WaitSync() },
	}
	if n.observer != nil {
		o.Observer, o.Receipt, o.Name = n.observer.key.ID(), n.observer.receipt, n.observer.key.Name
	}
	if slices.Contains(n.cfg.Byzantine, ByzForgeBodies) {
		o.Tamper = forgeBody
		n.log.Warn("this node delivers forged alert bodies on purpose (test mode)", "byzantine", ByzForgeBodies)
	}
	if n.byz.has(ByzForgeReceipts) && n.observer != nil {
		n.startForger(ctx)
	}
	nt, err := notify.New(o)
	if err != nil {
		return err
	}
	n.notifier = nt
	n.app.OnCommit(func(b abci.Block) { nt.Committed(b.Alerts, b.Deliveries) })
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		nt.Run(ctx)
	}()
	return nil
}

// startForger runs the forge-receipts behaviour beside the silent
// notifier: every committed alert gets a receipt for every configured
// receiver, delivered or not.
func (n *Node) startForger(ctx context.Context) {
	var receivers []string
	for _, r := range n.settings.notify.Receivers {
		receivers = append(receivers, r.Name)
	}
	blocks := make(chan []types.Alert, 256)
	n.app.OnCommit(func(b abci.Block) {
		if len(b.Alerts) == 0 {
			return
		}
		select {
		case blocks <- b.Alerts:
		default:
			n.log.Warn("forge-receipts: behind; alerts left without forged receipts", "height", b.Height)
		}
	})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.byz.forgeReceipts(ctx, n.observer, receivers, blocks)
	}()
}
