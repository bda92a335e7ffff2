package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	cmtcrypto "github.com/cometbft/cometbft/crypto"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	cmttypes "github.com/cometbft/cometbft/types"
	cmttime "github.com/cometbft/cometbft/types/time"
	"github.com/spf13/viper"

	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/internal/jsonconf"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/notify"
	"github.com/bftmon/bftmon/store"
)

// Files of a node home, relative to it. CometBFT's own files keep their
// usual places (config/config.toml, config/genesis.json, data/...).
const (
	SettingsFile    = "config/bftmon.json"
	ObserverKeyFile = "config/observer_key.json"
	OperatorKeyFile = "config/operator_key.json"
	AppDataDir      = "data/app"
	SnapshotDir     = "data/snapshots"
	// TxIndexDB is bftmon's own index of committed tx outcomes
	// (package txindex): the goleveldb database txs.db in data/.
	TxIndexDB = "data/txs.db"
	// CometTxIndexDB is CometBFT's kv tx index, which bftmon no longer
	// writes (its indexer is "null"); an older home may still hold it.
	CometTxIndexDB = "data/tx_index.db"
)

// Settings are bftmon's own settings of a node (config/bftmon.json).
type Settings struct {
	// HTTPAddr is where the HTTP API listens.
	HTTPAddr string `json:"http_addr"`
	// DNSAddr is where the DNS interface listens, UDP and TCP ("": no DNS
	// interface).
	DNSAddr string `json:"dns_addr"`
	// ObserverKey is the observer key file, relative to the home ("" : the
	// node runs no observer).
	ObserverKey string `json:"observer_key"`
	// FlushInterval is how often observations are submitted.
	FlushInterval Duration `json:"flush_interval"`
	// MaxConcurrentProbes bounds the probes in flight.
	MaxConcurrentProbes int `json:"max_concurrent_probes"`
	// HTTPMaxConnections caps the HTTP API's open connections (default
	// 2048); further clients wait until one closes.
	HTTPMaxConnections int `json:"http_max_connections"`
	// HTTPMaxConnectionsPerClient caps the open connections of one client
	// address (0, the default: half of HTTPMaxConnections); one more is
	// answered 429 and closed. One client's parked blocking queries are
	// bounded by it too: a connection carries one request at a time.
	HTTPMaxConnectionsPerClient int `json:"http_max_connections_per_client"`
	// HTTPReservedConnections are accepted beyond HTTPMaxConnections when
	// no idle connection can be closed to make room (default 16); they
	// answer only the status routes (GET /v1/status, /metrics).
	HTTPReservedConnections int `json:"http_reserved_connections"`
	// HTTPMaxBodyReads caps the request bodies the HTTP API reads at once
	// (default 64); a request waits up to 2 s for a slot, then gets 503.
	// Requests without a body, blocking queries among them, do not count.
	HTTPMaxBodyReads int `json:"http_max_body_reads"`
	// HTTPMaxBodyBytes caps the bytes of the bodies being read at once
	// (default 64 MiB, at least 1 MiB: one transaction).
	HTTPMaxBodyBytes int64 `json:"http_max_body_bytes"`
	// RetainBlocks is how many recent blocks CometBFT keeps (default
	// 100000, about 14 h at 0.5 s blocks; 0: all). Older blocks and their
	// states are pruned, but never past the oldest snapshot served, so that
	// a node state-syncing from any can still fetch the blocks after it.
	RetainBlocks int64 `json:"retain_blocks"`
	// SnapshotInterval is how many heights apart state-sync snapshots are
	// taken (default 1000; 0: none). The last 2 are kept in data/snapshots.
	SnapshotInterval int64 `json:"snapshot_interval"`
	// KeepVersions is how many versions of the application state are kept
	// for queries at past heights and proofs (default 1000). A version
	// being exported for a snapshot is kept until the export ends, whatever
	// this says.
	KeepVersions int64 `json:"keep_versions"`
	// TxIndexRetainBlocks is how many recent heights the node's index of
	// committed transactions (data/txs.db, GET /v1/txs/{hash}) keeps
	// (default 100000, as retain_blocks; 0: all).
	TxIndexRetainBlocks int64 `json:"tx_index_retain_blocks"`
	// PeerRPC lists the CometBFT RPC URLs of the network's other nodes
	// (bftmon testnet writes them). Only the equivocate test behaviour uses
	// them, to send different transactions to different nodes.
	PeerRPC []string `json:"peer_rpc,omitempty"`
	// Notify configures alert delivery: receivers, hand-off delay, retries
	// (docs/alerts.md).
	Notify notify.Settings `json:"notify,omitzero"`

	notify notify.Config // Notify checked, by ReadSettings
}

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration time.Duration

// MarshalJSON writes "1s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%s: want a Go duration string such as \"1s\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q: want a Go duration such as \"1s\" or \"500ms\"", s)
	}
	*d = Duration(v)
	return nil
}

// DefaultDNSAddr is where the DNS interface listens unless told otherwise
// (Consul's DNS port).
const DefaultDNSAddr = "127.0.0.1:8600"

// DefaultSettings are what `init` starts from and what the keys a settings
// file omits take.
func DefaultSettings() Settings {
	return Settings{HTTPAddr: "127.0.0.1:8500", DNSAddr: DefaultDNSAddr, ObserverKey: ObserverKeyFile, FlushInterval: Duration(time.Second), MaxConcurrentProbes: 64,
		HTTPMaxConnections: server.DefaultMaxConns, HTTPReservedConnections: server.DefaultReservedConns, HTTPMaxBodyReads: server.DefaultMaxBodyReads, HTTPMaxBodyBytes: server.DefaultMaxBodyBytes,
		RetainBlocks: DefaultRetainBlocks, SnapshotInterval: DefaultSnapshotInterval, KeepVersions: store.KeepVersions,
		TxIndexRetainBlocks: DefaultTxIndexRetainBlocks}
}

// Retention defaults (Settings.RetainBlocks, SnapshotInterval,
// TxIndexRetainBlocks).
const (
	DefaultRetainBlocks        = 100_000
	DefaultSnapshotInterval    = 1000
	DefaultTxIndexRetainBlocks = DefaultRetainBlocks
)

// httpLimits are the HTTP API's limits from the settings.
func (st Settings) httpLimits() server.Limits {
	return server.Limits{MaxConns: st.HTTPMaxConnections, MaxConnsPerClient: st.HTTPMaxConnectionsPerClient, ReservedConns: st.HTTPReservedConnections, MaxBodyReads: st.HTTPMaxBodyReads, MaxBodyBytes: st.HTTPMaxBodyBytes}
}

// InitOptions describe a one-node network to create.
type InitOptions struct {
	Home       string
	ChainID    string
	Datacenter string
	Moniker    string
	HTTPAddr   string // default 127.0.0.1:8500
	RPCAddr    string // default tcp://127.0.0.1:26657
	P2PAddr    string // default tcp://127.0.0.1:26656
	// DNSAddr is where the DNS interface listens; empty: none (bftmon init
	// and dev pass DefaultDNSAddr unless told otherwise). Many nodes of
	// tests share one machine, so there is no default here.
	DNSAddr string
	// BlockInterval, if set, is consensus.timeout_commit with empty blocks
	// made at once: a steady block every BlockInterval (0: the network
	// profile's settings, where blocks come when there is something to do).
	BlockInterval time.Duration
	// Network is the consensus profile, NetworkLAN (default) or NetworkWAN.
	Network string
}

// Initialized tells whether home already holds a node.
func Initialized(home string) bool {
	_, err := os.Stat(filepath.Join(home, "config", "genesis.json"))
	return err == nil
}

// Init creates a one-validator, one-observer network in opts.Home with an
// operator key allowed to manage every service. It refuses to overwrite an
// existing home.
func Init(opts InitOptions) error {
	if opts.Home == "" {
		return fmt.Errorf("init: no home directory given")
	}
	if opts.ChainID == "" {
		opts.ChainID = "bftmon-dev"
	}
	if opts.Datacenter == "" {
		opts.Datacenter = "dc1"
	}
	if opts.Moniker == "" {
		opts.Moniker = "node0"
	}
	if err := checkNetwork(opts.Network); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	h, err := prepareHome(opts, func(cfg *cmtcfg.Config) {
		tuneConsensus(cfg, opts.Network)
		if opts.BlockInterval > 0 {
			// Steady blocks, empty ones too, as tests and benchmarks that
			// count in blocks want them.
			c := cfg.Consensus
			c.TimeoutCommit, c.CreateEmptyBlocksInterval = opts.BlockInterval, 0
		}
	})
	if err != nil {
		return err
	}
	op, err := keys.LoadOrGenerate(filepath.Join(opts.Home, OperatorKeyFile), "operator")
	if err != nil {
		return err
	}
	// Blocks that change nothing leave the state alone, so that CometBFT
	// can wait for transactions; steady blocks record every one, as tests
	// that count in blocks expect.
	quiet := int64(app.DefaultQuietMs)
	if opts.BlockInterval > 0 {
		quiet = 0
	}
	return writeGenesis(opts.ChainID, []*nodeHome{h}, op, quiet)
}

// nodeHome is a node home being created: its CometBFT config, validator
// key, observer key and datacenter.
type nodeHome struct {
	home       string
	cfg        *cmtcfg.Config
	moniker    string
	datacenter string
	validator  cmtcrypto.PubKey
	observer   keys.Key
	nodeID     string
	settings   Settings
}

// prepareHome creates a node home's directories, CometBFT config (tuned by
// tune), validator, node and observer keys, observe token, and settings. The genesis comes
// after, from every home of the network.
func prepareHome(opts InitOptions, tune func(*cmtcfg.Config)) (*nodeHome, error) {
	if Initialized(opts.Home) {
		return nil, fmt.Errorf("init: %s already holds a node (remove it or use another --home)", opts.Home)
	}
	st := DefaultSettings()
	if opts.HTTPAddr != "" {
		st.HTTPAddr = opts.HTTPAddr
	}
	st.DNSAddr = opts.DNSAddr
	cfg := cmtcfg.DefaultConfig()
	cfg.SetRoot(opts.Home)
	cfg.Moniker = opts.Moniker
	cfg.RPC.ListenAddress = orDefault(opts.RPCAddr, "tcp://127.0.0.1:26657")
	cfg.P2P.ListenAddress = orDefault(opts.P2PAddr, "tcp://127.0.0.1:26656")
	cfg.P2P.AllowDuplicateIP = true
	cfg.P2P.AddrBookStrict = false
	// Peers are configured (persistent_peers), not discovered. Off, PEX also
	// leaves no address book behind that CometBFT's Stop does not wait for
	// (it would rewrite config/addrbook.json after the node stopped).
	cfg.P2P.PexReactor = false
	cfg.Instrumentation.Prometheus = false
	// The node indexes transactions itself (TxIndexDB), pruned; CometBFT's
	// kv indexer cannot be (v0.40).
	cfg.TxIndex.Indexer = "null"
	tune(cfg)
	for _, dir := range []string{"config", "data"} {
		if err := os.MkdirAll(filepath.Join(opts.Home, dir), 0o700); err != nil {
			return nil, fmt.Errorf("init %s: %w", opts.Home, err)
		}
	}
	if _, err := createObserveToken(filepath.Join(opts.Home, ObserveTokenFile)); err != nil {
		return nil, fmt.Errorf("init %s: %w", opts.Home, err)
	}
	pv := privval.LoadOrGenFilePV(cfg.PrivValidatorKeyFile(), cfg.PrivValidatorStateFile())
	nk, err := p2p.LoadOrGenNodeKey(cfg.NodeKeyFile())
	if err != nil {
		return nil, fmt.Errorf("init node key: %w", err)
	}
	obs, err := keys.LoadOrGenerate(filepath.Join(opts.Home, ObserverKeyFile), opts.Moniker)
	if err != nil {
		return nil, err
	}
	pub, err := pv.GetPubKey()
	if err != nil {
		return nil, err
	}
	return &nodeHome{home: opts.Home, cfg: cfg, moniker: opts.Moniker, datacenter: opts.Datacenter,
		validator: pub, observer: obs, nodeID: string(nk.ID()), settings: st}, nil
}

// writeGenesis writes one genesis, with every home's validator and observer
// and the operator, into every home, with its config and settings.
func writeGenesis(chainID string, homes []*nodeHome, op keys.Key, quietMs int64) error {
	g := app.Genesis{Operators: []app.GenesisOperator{{Name: "operator", PubKey: op.PubBase64(), Prefixes: []string{""}}}, QuietMs: quietMs}
	doc := cmttypes.GenesisDoc{
		ChainID:         chainID,
		GenesisTime:     cmttime.Now(),
		InitialHeight:   1,
		ConsensusParams: consensusParams(),
	}
	for _, h := range homes {
		g.Observers = append(g.Observers, app.GenesisObserver{Name: h.moniker, PubKey: h.observer.PubBase64(), Datacenter: h.datacenter, Weight: 1})
		doc.Validators = append(doc.Validators, cmttypes.GenesisValidator{Address: h.validator.Address(), PubKey: h.validator, Power: 10, Name: h.moniker})
	}
	appState, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	doc.AppState = appState
	for _, h := range homes {
		cmtcfg.WriteConfigFile(filepath.Join(h.home, "config", "config.toml"), h.cfg)
		if err := doc.SaveAs(h.cfg.GenesisFile()); err != nil {
			return fmt.Errorf("write genesis: %w", err)
		}
		if err := WriteSettings(h.home, h.settings); err != nil {
			return err
		}
	}
	return nil
}

// consensusParams are CometBFT's defaults with the block limits of the
// application (app.MaxBlockBytes, app.MaxBlockGas), so that the mempool
// reaps no more than an honest proposal may carry.
func consensusParams() *cmttypes.ConsensusParams {
	p := cmttypes.DefaultConsensusParams()
	p.Block.MaxBytes = app.MaxBlockBytes
	p.Block.MaxGas = app.MaxBlockGas
	return p
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// WriteSettings writes config/bftmon.json.
func WriteSettings(home string, st Settings) error {
	bz, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(home, SettingsFile), append(bz, '\n'), 0o600); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// ReadSettings reads config/bftmon.json, filling defaults for what it omits.
func ReadSettings(home string) (Settings, error) {
	st := DefaultSettings()
	bz, err := os.ReadFile(filepath.Join(home, SettingsFile))
	if err != nil {
		return st, fmt.Errorf("read settings: %w (is %s a node home? create one with 'bftmon init --home %s')", err, home, home)
	}
	file := filepath.Join(home, SettingsFile)
	pos, err := jsonconf.Decode(file, bz, &st)
	if err != nil {
		return st, fmt.Errorf("read settings: %w", err)
	}
	if err := st.check(file, pos); err != nil {
		return st, fmt.Errorf("read settings: %w", err)
	}
	if st.notify, err = st.Notify.Check(file, bz); err != nil {
		return st, fmt.Errorf("read settings: %w", err)
	}
	return st, nil
}

// check refuses values the node cannot run with, naming the setting and
// where it is in file.
func (st Settings) check(file string, pos jsonconf.Positions) error {
	for _, c := range []struct {
		key string
		bad bool
		why string
	}{
		{"http_addr", st.HTTPAddr == "", "empty: want a listen address such as 127.0.0.1:8500"},
		{"flush_interval", st.FlushInterval <= 0, fmt.Sprintf("%s: want a positive duration such as \"1s\"", time.Duration(st.FlushInterval))},
		{"max_concurrent_probes", st.MaxConcurrentProbes <= 0, fmt.Sprintf("%d: want at least 1 (default 64)", st.MaxConcurrentProbes)},
		{"http_max_connections", st.HTTPMaxConnections <= 0, fmt.Sprintf("%d: want at least 1 (default %d)", st.HTTPMaxConnections, server.DefaultMaxConns)},
		{"http_max_connections_per_client", st.HTTPMaxConnectionsPerClient < 0 || st.HTTPMaxConnectionsPerClient > st.HTTPMaxConnections, fmt.Sprintf("%d: want 1 to http_max_connections (%d), or 0 for half of it (the default)", st.HTTPMaxConnectionsPerClient, st.HTTPMaxConnections)},
		{"http_reserved_connections", st.HTTPReservedConnections <= 0, fmt.Sprintf("%d: want at least 1 (default %d)", st.HTTPReservedConnections, server.DefaultReservedConns)},
		{"http_max_body_reads", st.HTTPMaxBodyReads <= 0, fmt.Sprintf("%d: want at least 1 (default %d)", st.HTTPMaxBodyReads, server.DefaultMaxBodyReads)},
		{"retain_blocks", st.RetainBlocks < 0, fmt.Sprintf("%d: want 0 (keep every block) or more (default %d)", st.RetainBlocks, DefaultRetainBlocks)},
		{"snapshot_interval", st.SnapshotInterval < 0, fmt.Sprintf("%d: want 0 (no snapshots) or more (default %d)", st.SnapshotInterval, DefaultSnapshotInterval)},
		{"tx_index_retain_blocks", st.TxIndexRetainBlocks < 0, fmt.Sprintf("%d: want 0 (index every block) or more (default %d)", st.TxIndexRetainBlocks, DefaultTxIndexRetainBlocks)},
		{"keep_versions", st.KeepVersions < 1, fmt.Sprintf("%d: want at least 1 (default %d)", st.KeepVersions, store.KeepVersions)},
		{"http_max_body_bytes", st.HTTPMaxBodyBytes < server.MaxBody, fmt.Sprintf("%d: want at least %d, one transaction (default %d)", st.HTTPMaxBodyBytes, server.MaxBody, server.DefaultMaxBodyBytes)},
	} {
		if c.bad {
			return fmt.Errorf("%s %s", pos.Where(file, c.key), c.why)
		}
	}
	return nil
}

// LoadCometConfig reads config/config.toml of home.
func LoadCometConfig(home string) (*cmtcfg.Config, error) {
	path := filepath.Join(home, "config", "config.toml")
	if err := checkCometConfig(path); err != nil {
		return nil, err
	}
	v := viper.New()
	v.SetConfigFile(path)
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("read CometBFT config: %w", err)
	}
	cfg := cmtcfg.DefaultConfig()
	if err := v.Unmarshal(cfg); err != nil {
		return nil, fmt.Errorf("parse CometBFT config: %w", err)
	}
	cfg.SetRoot(home)
	if err := cfg.ValidateBasic(); err != nil {
		return nil, fmt.Errorf("CometBFT config in %s: %w", home, err)
	}
	return cfg, nil
}

// GenesisHashFile holds the sha256 of config/genesis.json as it was when
// the home first started, to notice later edits.
const GenesisHashFile = "data/genesis.sha256"

// checkGenesis reads the genesis file and validates its app_state, with
// errors naming the file's line.
func checkGenesis(file string) ([]byte, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read genesis: %w (create a home with 'bftmon init')", err)
	}
	var doc struct {
		AppState json.RawMessage `json:"app_state"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		if _, err := jsonconf.Decode(file, raw, &map[string]any{}); err != nil {
			return nil, fmt.Errorf("read genesis: %w", err)
		}
		return nil, fmt.Errorf("read genesis %s: %w", file, err)
	}
	line := jsonconf.Keys(raw)["app_state"]
	if _, err := app.ParseGenesisFile(file, line, doc.AppState); err != nil {
		return nil, err
	}
	return raw, nil
}

// noteGenesis records the genesis' hash at a home's first start and, once
// the chain has state, warns if the file was edited since: CometBFT reads
// genesis only at height 0, so the edit changes nothing.
func noteGenesis(home string, genesis []byte, height int64, log *slog.Logger) error {
	sum := sha256.Sum256(genesis)
	now := hex.EncodeToString(sum[:])
	path := filepath.Join(home, GenesisHashFile)
	recorded, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.WriteFile(path, []byte(now+"\n"), 0o600); err != nil {
			return fmt.Errorf("record the genesis hash: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read the recorded genesis hash: %w (remove %s to record the current genesis)", err, path)
	}
	if height > 0 && strings.TrimSpace(string(recorded)) != now {
		log.Warn("config/genesis.json was edited after this home first started: the edit is ignored, the chain keeps the state it started from; "+
			"to run a network from the new genesis, give every node a fresh home (bftmon init) or delete their data/ directories",
			"file", filepath.Join(home, "config", "genesis.json"), "recorded_sha256", strings.TrimSpace(string(recorded)), "sha256", now, "height", height)
	}
	return nil
}

// checkKeyFiles refuses to start a home whose validator or node key is
// missing (CometBFT would make new ones: a validator nobody knows, stuck
// at height 0, or a new node id its peers do not dial) and warns about
// key files that others than the owner may read.
func checkKeyFiles(home string, ccfg *cmtcfg.Config, st Settings, log *slog.Logger) error {
	for _, f := range []string{ccfg.PrivValidatorKeyFile(), ccfg.NodeKeyFile()} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("key file %s: %w: this home was created by 'bftmon init' and its key is gone; restore the file from a backup (a new key would not be the validator or node of this network)", f, err)
		}
	}
	files := []string{ccfg.PrivValidatorKeyFile(), ccfg.NodeKeyFile(), filepath.Join(home, OperatorKeyFile), filepath.Join(home, ObserveTokenFile)}
	if st.ObserverKey != "" {
		files = append(files, filepath.Join(home, st.ObserverKey))
	}
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("key file readable by others than its owner: run chmod 600 on it", "file", f, "mode", fi.Mode().Perm().String())
		}
	}
	return nil
}
