package node

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"

	"github.com/bftmon/bftmon/keys"
)

// TestnetOptions describe a multi-node network on one machine.
type TestnetOptions struct {
	// Out is the directory that receives node0 … node<N-1> and operator_key.json.
	Out string
	// Nodes is the number of nodes, each a validator and an observer.
	Nodes int
	// Datacenters spreads the observers over dc1 … dc<D>, in contiguous runs:
	// 4 nodes over 2 datacenters are node0, node1 in dc1 and node2, node3 in dc2.
	Datacenters int
	// ChainID names the chain (default bftmon-testnet).
	ChainID string
	// BasePort is the first port; node K uses BasePort+10K (P2P), +1 (RPC),
	// +2 (HTTP API) and +3 (DNS, UDP and TCP), all on 127.0.0.1.
	BasePort int
}

// TestnetNode is one node of a testnet as written.
type TestnetNode struct {
	Name, Home, Datacenter string
	HTTPAddr, RPCAddr      string // host:port
	P2PAddr                string
	DNSAddr                string // host:port, UDP and TCP
	NodeID                 string
}

// Loopback consensus timeouts: a block is committed well under a second on
// loopback, and a round whose proposer is down times out within a second.
const (
	testnetTimeoutPropose  = 800 * time.Millisecond
	testnetTimeoutVote     = 200 * time.Millisecond
	testnetTimeoutDelta    = 100 * time.Millisecond
	testnetTimeoutCommit   = 300 * time.Millisecond
	testnetDefaultBasePort = 27000
	testnetDefaultChainID  = "bftmon-testnet"
	testnetOperatorKeyFile = "operator_key.json"
	testnetMaxNodes        = 64
)

// Testnet writes the homes of an N-node network with one genesis: N
// validators and N observers of weight 1, an operator allowed every service
// (its key in Out and in every home), persistent peers, and distinct ports.
func Testnet(opts TestnetOptions) ([]TestnetNode, error) {
	switch {
	case opts.Out == "":
		return nil, fmt.Errorf("testnet: no output directory given (--out)")
	case opts.Nodes < 1 || opts.Nodes > testnetMaxNodes:
		return nil, fmt.Errorf("testnet: --nodes %d: want 1..%d", opts.Nodes, testnetMaxNodes)
	case opts.Datacenters < 1 || opts.Datacenters > opts.Nodes:
		return nil, fmt.Errorf("testnet: --dcs %d: want 1..%d (at most one datacenter per node)", opts.Datacenters, opts.Nodes)
	}
	if opts.ChainID == "" {
		opts.ChainID = testnetDefaultChainID
	}
	if opts.BasePort == 0 {
		opts.BasePort = testnetDefaultBasePort
	}
	if last := opts.BasePort + 10*(opts.Nodes-1) + 3; opts.BasePort < 1024 || last > 65535 {
		return nil, fmt.Errorf("testnet: --base-port %d: the ports %d..%d must lie in 1024..65535", opts.BasePort, opts.BasePort, last)
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	nodes := make([]TestnetNode, opts.Nodes)
	for i := range nodes {
		port := opts.BasePort + 10*i
		nodes[i] = TestnetNode{
			Name:       fmt.Sprintf("node%d", i),
			Home:       filepath.Join(opts.Out, fmt.Sprintf("node%d", i)),
			Datacenter: fmt.Sprintf("dc%d", i*opts.Datacenters/opts.Nodes+1),
			P2PAddr:    fmt.Sprintf("127.0.0.1:%d", port),
			RPCAddr:    fmt.Sprintf("127.0.0.1:%d", port+1),
			HTTPAddr:   fmt.Sprintf("127.0.0.1:%d", port+2),
			DNSAddr:    fmt.Sprintf("127.0.0.1:%d", port+3),
		}
	}
	homes := make([]*nodeHome, len(nodes))
	for i, n := range nodes {
		h, err := prepareHome(InitOptions{Home: n.Home, ChainID: opts.ChainID, Datacenter: n.Datacenter, Moniker: n.Name,
			HTTPAddr: n.HTTPAddr, RPCAddr: "tcp://" + n.RPCAddr, P2PAddr: "tcp://" + n.P2PAddr, DNSAddr: n.DNSAddr}, tuneLoopback)
		if err != nil {
			return nil, err
		}
		homes[i], nodes[i].NodeID = h, h.nodeID
	}
	for i, h := range homes {
		var peers, rpcs []string
		for j, n := range nodes {
			if j != i {
				peers = append(peers, n.NodeID+"@"+n.P2PAddr)
				rpcs = append(rpcs, "http://"+n.RPCAddr)
			}
		}
		h.cfg.P2P.PersistentPeers = strings.Join(peers, ",")
		h.settings.PeerRPC = rpcs
	}
	op, err := keys.LoadOrGenerate(filepath.Join(opts.Out, testnetOperatorKeyFile), "operator")
	if err != nil {
		return nil, err
	}
	for _, h := range homes {
		if err := keys.Save(filepath.Join(h.home, OperatorKeyFile), op); err != nil {
			return nil, err
		}
	}
	if err := writeGenesis(opts.ChainID, homes, op); err != nil {
		return nil, err
	}
	return nodes, nil
}

// tuneLoopback sets the consensus timeouts of a loopback testnet.
func tuneLoopback(cfg *cmtcfg.Config) {
	c := cfg.Consensus
	c.TimeoutPropose, c.TimeoutProposeDelta = testnetTimeoutPropose, testnetTimeoutDelta
	c.TimeoutPrevote, c.TimeoutPrevoteDelta = testnetTimeoutVote, testnetTimeoutDelta
	c.TimeoutPrecommit, c.TimeoutPrecommitDelta = testnetTimeoutVote, testnetTimeoutDelta
	c.TimeoutCommit = testnetTimeoutCommit
	// Peers on one machine reconnect quickly after a restart.
	cfg.P2P.PersistentPeersMaxDialPeriod = 2 * time.Second
}
