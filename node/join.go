package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/snapshot"
)

// JoinOptions describe a full node to add to a running network: where the
// network's nodes answer CometBFT's RPC, and where the new node listens.
type JoinOptions struct {
	// Home is the new node's home; it must not hold a node yet.
	Home string
	// RPC lists CometBFT RPC URLs of the network's nodes (at least one;
	// "host:port", "tcp://host:port" and "http://host:port" are read
	// alike). The first gives the genesis and, unless TrustHeight is set,
	// the header to trust; every one becomes a persistent peer and a state
	// sync RPC server.
	RPC []string
	// Moniker names the node (default "full-node").
	Moniker string
	// HTTPAddr, RPCAddr, P2PAddr are where the new node listens (defaults
	// as for Init). DNSAddr is its DNS interface ("": none).
	HTTPAddr, RPCAddr, P2PAddr, DNSAddr string
	// NoStateSync makes the node replay every block from genesis instead
	// of restoring a snapshot: only possible while the network still keeps
	// block 1 (retain_blocks 0, or a young network).
	NoStateSync bool
	// TrustHeight and TrustHash are the header the node's light client
	// trusts (both or neither; neither: the newest snapshot's height and
	// the first RPC server's hash of it, trusted on first use).
	TrustHeight int64
	TrustHash   string
	// TrustPeriod is how long a header stays trusted (default 168h): the
	// node must start within it of the trusted header's time.
	TrustPeriod time.Duration
	// DiscoveryTime is how long the node listens for snapshots from its
	// peers before picking one (default CometBFT's 15s; at least 5s).
	DiscoveryTime time.Duration
}

// Joined is what Join wrote into the new home.
type Joined struct {
	ChainID string
	NodeID  string
	// Peers are the persistent peers, id@host:port.
	Peers []string
	// RPCServers are the state sync RPC servers (the only one twice if
	// only one was given: CometBFT requires two).
	RPCServers []string
	// Snapshot is the newest snapshot height the network's nodes listed (0
	// with NoStateSync).
	Snapshot int64
	// TrustHeight and TrustHash are the trusted header; TrustedFrom is the
	// RPC URL whose word was taken for it ("" if given in JoinOptions).
	TrustHeight int64
	TrustHash   string
	TrustedFrom string
	// Confirmed lists the other RPC URLs that gave the same hash at
	// TrustHeight.
	Confirmed []string
	// EarliestBlock is the lowest block the first RPC server still keeps.
	EarliestBlock int64
}

// DefaultTrustPeriod is how long a joined node's trusted header stays
// trusted unless told otherwise (CometBFT's default).
const DefaultTrustPeriod = 168 * time.Hour

const joinRPCTimeout = 10 * time.Second

// Join writes the home of a new full node of a running network: the
// genesis fetched from the network's RPC, fresh node and validator keys
// (the validator is not in the validator set), its settings with no
// observer, and a config.toml whose persistent peers are the given nodes
// and whose [statesync] restores the newest snapshot, trusting a header at
// or below it. It refuses an existing home and a network that serves no
// snapshot, with what to do.
func Join(ctx context.Context, opts JoinOptions) (Joined, error) {
	var out Joined
	switch {
	case opts.Home == "":
		return out, fmt.Errorf("join: no home directory given (--home)")
	case Initialized(opts.Home):
		return out, fmt.Errorf("join: %s already holds a node (remove it or use another --home)", opts.Home)
	case len(opts.RPC) == 0:
		return out, fmt.Errorf("join: no RPC address of the network given (--rpc http://HOST:26657)")
	case (opts.TrustHeight == 0) != (opts.TrustHash == ""):
		return out, fmt.Errorf("join: give --trust-height and --trust-hash together, or neither")
	case opts.TrustHeight < 0:
		return out, fmt.Errorf("join: --trust-height %d: want a positive height", opts.TrustHeight)
	}
	if opts.TrustHash != "" {
		if bz, err := hex.DecodeString(opts.TrustHash); err != nil || len(bz) != 32 {
			return out, fmt.Errorf("join: --trust-hash %q: want the 64 hex digits of a block hash", opts.TrustHash)
		}
		opts.TrustHash = strings.ToUpper(opts.TrustHash)
	}
	if opts.TrustPeriod == 0 {
		opts.TrustPeriod = DefaultTrustPeriod
	}
	if opts.Moniker == "" {
		opts.Moniker = "full-node"
	}
	var servers []joinServer
	for _, raw := range opts.RPC {
		s, err := dialRPC(ctx, raw)
		if err != nil {
			return out, err
		}
		if slices.ContainsFunc(servers, func(o joinServer) bool { return o.url == s.url || o.peer == s.peer }) {
			continue // the same node given twice
		}
		servers = append(servers, s)
		out.Peers = append(out.Peers, s.peer)
		out.RPCServers = append(out.RPCServers, s.url)
		if s.chainID != servers[0].chainID {
			return out, fmt.Errorf("join: %s is on chain %q, %s on %q: give the RPC addresses of one network", s.url, s.chainID, servers[0].url, servers[0].chainID)
		}
	}
	first := servers[0]
	out.ChainID, out.EarliestBlock = first.chainID, first.earliest
	if len(out.RPCServers) == 1 {
		out.RPCServers = append(out.RPCServers, out.RPCServers[0])
	}
	genesis, err := fetchGenesis(ctx, first)
	if err != nil {
		return out, err
	}
	if genesis.ChainID != first.chainID {
		return out, fmt.Errorf("join: %s: genesis of chain %q, but the node runs chain %q", first.url, genesis.ChainID, first.chainID)
	}

	if opts.NoStateSync {
		if first.earliest > genesis.InitialHeight {
			return out, fmt.Errorf("join: %s keeps blocks from %d on, not from %d: a node cannot replay the chain from genesis; join with state sync (leave --state-sync on)", first.url, first.earliest, genesis.InitialHeight)
		}
	} else {
		for _, s := range servers {
			list, err := listSnapshots(ctx, s)
			if err != nil {
				return out, err
			}
			if len(list) > 0 {
				out.Snapshot = max(out.Snapshot, int64(list[0].Height))
			}
		}
		if out.Snapshot == 0 {
			return out, fmt.Errorf("join: no node at %s serves a snapshot yet: state sync needs snapshot_interval > 0 in the serving nodes' config/bftmon.json (default %d) and the chain past the first multiple of it (now at %d); wait for one, or, if the network still keeps block %d (earliest block %d), join with --state-sync=false to replay every block",
				strings.Join(opts.RPC, ", "), DefaultSnapshotInterval, first.latest, genesis.InitialHeight, first.earliest)
		}
		out.TrustHeight, out.TrustHash = opts.TrustHeight, opts.TrustHash
		if out.TrustHeight == 0 {
			// The newest snapshot: the node's light client verifies from
			// it forward to whatever snapshot it restores.
			out.TrustHeight, out.TrustedFrom = out.Snapshot, first.url
		}
		for _, s := range servers {
			h, err := blockHash(ctx, s, out.TrustHeight, opts.TrustPeriod)
			if err != nil {
				return out, err
			}
			switch {
			case out.TrustHash == "":
				out.TrustHash = h
			case h != out.TrustHash && s.url == out.TrustedFrom:
				return out, fmt.Errorf("join: %s gives block hash %s at height %d, not %s: the node's answers are inconsistent; try again or join through another node", s.url, h, out.TrustHeight, out.TrustHash)
			case h != out.TrustHash:
				what := "the --trust-hash given"
				if out.TrustedFrom != "" {
					what = "what " + out.TrustedFrom + " gives"
				}
				return out, fmt.Errorf("join: %s has block hash %s at height %d, not %s (%s): either the hash is mistyped or one of these nodes is not on the chain you mean to join; check the hash with an operator of the network you trust, and do not join through a node that disagrees with it", s.url, h, out.TrustHeight, out.TrustHash, what)
			case s.url != out.TrustedFrom:
				out.Confirmed = append(out.Confirmed, s.url)
			}
		}
	}

	h, err := prepareHome(InitOptions{Home: opts.Home, ChainID: genesis.ChainID, Moniker: opts.Moniker,
		HTTPAddr: opts.HTTPAddr, RPCAddr: opts.RPCAddr, P2PAddr: opts.P2PAddr, DNSAddr: opts.DNSAddr}, func(cfg *cmtcfg.Config) {
		tuneConsensus(cfg, NetworkLAN)
		cfg.P2P.PersistentPeers = strings.Join(out.Peers, ",")
		if opts.NoStateSync {
			return
		}
		ss := cfg.StateSync
		ss.Enable = true
		ss.RPCServers = out.RPCServers
		ss.TrustHeight, ss.TrustHash, ss.TrustPeriod = out.TrustHeight, out.TrustHash, opts.TrustPeriod
		if opts.DiscoveryTime > 0 {
			ss.DiscoveryTime = opts.DiscoveryTime
		}
	})
	if err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	out.NodeID = h.nodeID
	// The node observes nothing: its observer key would be in no observer
	// set. The key file prepareHome made goes with it.
	h.settings.ObserverKey = ""
	if err := os.Remove(filepath.Join(opts.Home, ObserverKeyFile)); err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	if err := h.cfg.ValidateBasic(); err != nil {
		return out, fmt.Errorf("join: the CometBFT config written would not start: %w", err)
	}
	cmtcfg.WriteConfigFile(filepath.Join(opts.Home, "config", "config.toml"), h.cfg)
	if err := genesis.SaveAs(h.cfg.GenesisFile()); err != nil {
		return out, fmt.Errorf("join: write genesis: %w", err)
	}
	if err := WriteSettings(opts.Home, h.settings); err != nil {
		return out, fmt.Errorf("join: %w", err)
	}
	return out, nil
}

// joinServer is one of the network's nodes as its RPC describes it.
type joinServer struct {
	url      string // http://host:port
	client   *rpchttp.HTTP
	chainID  string
	peer     string // id@host:port
	earliest int64
	latest   int64
}

// dialRPC reads the status of the node whose RPC is at raw.
func dialRPC(ctx context.Context, raw string) (joinServer, error) {
	u := raw
	if s, ok := strings.CutPrefix(u, "tcp://"); ok {
		u = "http://" + s
	} else if !strings.Contains(u, "://") {
		u = "http://" + u
	}
	u = strings.TrimRight(u, "/")
	pu, err := url.Parse(u)
	if err != nil || pu.Hostname() == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
		return joinServer{}, fmt.Errorf("join: --rpc %q: want a CometBFT RPC URL such as http://10.0.0.1:26657", raw)
	}
	c, err := rpchttp.NewWithTimeout(u, "/websocket", uint(joinRPCTimeout/time.Second))
	if err != nil {
		return joinServer{}, fmt.Errorf("join: --rpc %q: %w", raw, err)
	}
	rctx, cancel := context.WithTimeout(ctx, joinRPCTimeout)
	defer cancel()
	st, err := c.Status(rctx)
	if err != nil {
		return joinServer{}, fmt.Errorf("join: read the status of %s: %w (is the node running, and does its CometBFT RPC listen there? rpc.laddr in its config/config.toml must be reachable from this machine, not 127.0.0.1 if it is another one)", u, err)
	}
	peer, err := peerAddr(st.NodeInfo.ListenAddr, pu.Hostname())
	if err != nil {
		return joinServer{}, fmt.Errorf("join: %s: %w", u, err)
	}
	return joinServer{url: u, client: c, chainID: st.NodeInfo.Network, peer: string(st.NodeInfo.ID()) + "@" + peer,
		earliest: st.SyncInfo.EarliestBlockHeight, latest: st.SyncInfo.LatestBlockHeight}, nil
}

// peerAddr is the P2P address to dial for a node announcing listen (its
// p2p.external_address, or else its p2p.laddr) and reached by RPC at
// rpcHost: an unspecified host (0.0.0.0, ::, none) is the RPC's host.
func peerAddr(listen, rpcHost string) (string, error) {
	hp := listen
	if i := strings.Index(hp, "://"); i >= 0 {
		hp = hp[i+3:]
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil || port == "" {
		return "", fmt.Errorf("its P2P listen address %q is not host:port: set p2p.external_address in its config.toml", listen)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = rpcHost
	}
	return net.JoinHostPort(host, port), nil
}

// fetchGenesis reads the genesis through genesis_chunked, which serves
// any size (plain /genesis refuses large ones).
func fetchGenesis(ctx context.Context, s joinServer) (*cmttypes.GenesisDoc, error) {
	var raw []byte
	for i := 0; ; i++ {
		rctx, cancel := context.WithTimeout(ctx, joinRPCTimeout)
		res, err := s.client.GenesisChunked(rctx, uint(i))
		cancel()
		if err != nil {
			return nil, fmt.Errorf("join: read the genesis from %s (chunk %d): %w", s.url, i, err)
		}
		bz, err := base64.StdEncoding.DecodeString(res.Data)
		if err != nil {
			return nil, fmt.Errorf("join: genesis from %s, chunk %d: %w", s.url, i, err)
		}
		raw = append(raw, bz...)
		if i+1 >= res.TotalChunks {
			break
		}
	}
	doc, err := cmttypes.GenesisDocFromJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("join: genesis from %s: %w", s.url, err)
	}
	return doc, nil
}

// listSnapshots asks a node which snapshots it serves (newest first).
func listSnapshots(ctx context.Context, s joinServer) ([]snapshot.Info, error) {
	rctx, cancel := context.WithTimeout(ctx, joinRPCTimeout)
	defer cancel()
	res, err := s.client.ABCIQuery(rctx, abci.QuerySnapshots, nil)
	if err != nil {
		return nil, fmt.Errorf("join: list the snapshots of %s: %w", s.url, err)
	}
	if res.Response.Code != 0 {
		return nil, fmt.Errorf("join: list the snapshots of %s: %s (is it a bftmon node of this version or later?)", s.url, res.Response.Log)
	}
	var list []snapshot.Info
	if err := json.Unmarshal(res.Response.Value, &list); err != nil {
		return nil, fmt.Errorf("join: snapshots of %s: %w", s.url, err)
	}
	return list, nil
}

// blockHash is the hash of the block at height on s, refused if the
// header is older than the trust period.
func blockHash(ctx context.Context, s joinServer, height int64, trustPeriod time.Duration) (string, error) {
	rctx, cancel := context.WithTimeout(ctx, joinRPCTimeout)
	defer cancel()
	res, err := s.client.Commit(rctx, &height)
	if err != nil {
		hint := ""
		if height < s.earliest {
			hint = fmt.Sprintf(" (it keeps blocks from %d on: trust a later height)", s.earliest)
		}
		return "", fmt.Errorf("join: read the header at height %d from %s: %w%s", height, s.url, err, hint)
	}
	if res.SignedHeader.Header == nil || res.SignedHeader.Commit == nil {
		return "", fmt.Errorf("join: %s answered no header at height %d", s.url, height)
	}
	if age := time.Since(res.Header.Time); age > trustPeriod {
		return "", fmt.Errorf("join: the header at height %d is from %s, older than the trust period %s: trust a later height or a longer --trust-period", height, res.Header.Time.UTC().Format(time.RFC3339), trustPeriod)
	}
	hash := res.SignedHeader.Hash()
	if !bytes.Equal(hash, res.Commit.BlockID.Hash) {
		return "", fmt.Errorf("join: %s: the header at height %d hashes to %X, its commit is for %X", s.url, height, hash, res.Commit.BlockID.Hash)
	}
	return hash.String(), nil
}
