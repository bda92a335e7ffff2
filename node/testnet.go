package node

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"github.com/bftmon/bftmon/app"
	"os"
	"path/filepath"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"

	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/notify"
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
	// Docker writes the homes for containers named node0 … node<N-1> on
	// one container network instead (docker-compose.yml): every node
	// listens on 0.0.0.0 at the same ports (DockerPorts), and finds its
	// peers by container name. BasePort is then unused.
	Docker bool
	// Hosts, with Docker, are the addresses (host names or IPs) at which
	// the nodes reach node0 … node<N-1> (default: their container names).
	// docker-compose.yml gives the nodes fixed backbone addresses and
	// passes them here, so that a peer's address stays the same across
	// restarts and network disconnects, and no name has to resolve.
	Hosts []string
	// WebhookURL, if set, adds a native receiver named WebhookReceiver
	// with this URL to every node's notify settings, signed with a new
	// secret written to Out/webhook_secret (WebhookSecretFile).
	WebhookURL string
}

// Ports of a node in a container (TestnetOptions.Docker).
const (
	DockerP2PPort  = 26656
	DockerRPCPort  = 26657
	DockerHTTPPort = 8500
	DockerDNSPort  = 8600
)

// The webhook receiver a testnet can be written with (TestnetOptions.WebhookURL).
const (
	WebhookReceiver   = "webhook"
	WebhookSecretFile = "webhook_secret"
)

// TestnetExists tells whether out holds a testnet already (its node0 and
// operator key).
func TestnetExists(out string) bool {
	_, err := os.Stat(filepath.Join(out, testnetOperatorKeyFile))
	return err == nil && Initialized(filepath.Join(out, "node0"))
}

// TestnetNode is one node of a testnet as written.
type TestnetNode struct {
	Name, Home, Datacenter string
	HTTPAddr, RPCAddr      string // host:port
	P2PAddr                string
	DNSAddr                string // host:port, UDP and TCP
	NodeID                 string
}

const (
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
	if last := opts.BasePort + 10*(opts.Nodes-1) + 3; !opts.Docker && (opts.BasePort < 1024 || last > 65535) {
		return nil, fmt.Errorf("testnet: --base-port %d: the ports %d..%d must lie in 1024..65535", opts.BasePort, opts.BasePort, last)
	}
	if len(opts.Hosts) > 0 && (!opts.Docker || len(opts.Hosts) != opts.Nodes) {
		return nil, fmt.Errorf("testnet: --hosts names %d hosts: want one per node (%d), with --docker", len(opts.Hosts), opts.Nodes)
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	nodes := make([]TestnetNode, opts.Nodes)
	// listen[i] is where node i listens, nodes[i] where the others (and
	// clients on this machine, or in the containers' network) reach it.
	listen := make([]TestnetNode, opts.Nodes)
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
		listen[i] = nodes[i]
		if opts.Docker {
			host := nodes[i].Name
			if len(opts.Hosts) > 0 {
				host = opts.Hosts[i]
			}
			nodes[i].P2PAddr = fmt.Sprintf("%s:%d", host, DockerP2PPort)
			nodes[i].RPCAddr = fmt.Sprintf("%s:%d", host, DockerRPCPort)
			nodes[i].HTTPAddr = fmt.Sprintf("%s:%d", host, DockerHTTPPort)
			nodes[i].DNSAddr = fmt.Sprintf("%s:%d", host, DockerDNSPort)
			listen[i].P2PAddr = fmt.Sprintf("0.0.0.0:%d", DockerP2PPort)
			listen[i].RPCAddr = fmt.Sprintf("0.0.0.0:%d", DockerRPCPort)
			listen[i].HTTPAddr = fmt.Sprintf("0.0.0.0:%d", DockerHTTPPort)
			listen[i].DNSAddr = fmt.Sprintf("0.0.0.0:%d", DockerDNSPort)
		}
	}
	var webhook *notify.ReceiverSettings
	if opts.WebhookURL != "" {
		secret, err := writeWebhookSecret(filepath.Join(opts.Out, WebhookSecretFile))
		if err != nil {
			return nil, err
		}
		webhook = &notify.ReceiverSettings{Name: WebhookReceiver, URL: opts.WebhookURL, Secret: secret}
	}
	homes := make([]*nodeHome, len(nodes))
	for i, n := range listen {
		h, err := prepareHome(InitOptions{Home: n.Home, ChainID: opts.ChainID, Datacenter: n.Datacenter, Moniker: n.Name,
			HTTPAddr: n.HTTPAddr, RPCAddr: "tcp://" + n.RPCAddr, P2PAddr: "tcp://" + n.P2PAddr, DNSAddr: n.DNSAddr}, tuneLoopback)
		if err != nil {
			return nil, err
		}
		if webhook != nil {
			h.settings.Notify.Receivers = []notify.ReceiverSettings{*webhook}
		}
		if opts.Docker {
			// What the node tells its peers to dial it back at: a peer
			// that lost the connection it had accepted from this node
			// redials this, not the 0.0.0.0 it listens on.
			h.cfg.P2P.ExternalAddress = "tcp://" + nodes[i].P2PAddr
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
	if err := writeGenesis(opts.ChainID, homes, op, app.DefaultQuietMs); err != nil {
		return nil, err
	}
	return nodes, nil
}

// writeWebhookSecret writes a new Standard Webhooks secret to path (mode
// 0600) and returns it.
func writeWebhookSecret(path string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("testnet: webhook secret: %w", err)
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(b)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("testnet: write the webhook secret: %w", err)
	}
	return secret, nil
}

// tuneLoopback sets the consensus settings of a loopback testnet: the LAN
// profile.
func tuneLoopback(cfg *cmtcfg.Config) {
	tuneConsensus(cfg, NetworkLAN)
	// Peers on one machine reconnect quickly after a restart.
	cfg.P2P.PersistentPeersMaxDialPeriod = 2 * time.Second
}
