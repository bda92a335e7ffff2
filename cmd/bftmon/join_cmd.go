package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/node"
)

func newJoinCmd() *cobra.Command {
	var opts node.JoinOptions
	var stateSync bool
	cmd := &cobra.Command{
		Use:   "join --rpc http://HOST:26657 [--rpc ...] --home DIR",
		Short: "Create the home of a new full node of a running network, to start from a state-sync snapshot",
		Long: `join asks a running network's CometBFT RPC (--rpc, one or more of its nodes)
for its genesis, its nodes' P2P addresses and its snapshots, and writes a new
home: fresh node and validator keys (not in the validator set: the node
follows the chain, it does not vote), no observer, persistent_peers = the
given nodes, and CometBFT's [statesync] on, trusting the block header at the
network's newest snapshot. 'bftmon start' then restores a snapshot from the
peers, verified against that header, and follows the chain from there; blocks
the network has pruned are never needed.

The trusted header's hash comes from the first --rpc node: trust on first
use. Give --rpc several times to have the other nodes confirm it, or pass
--trust-height and --trust-hash that you read from a node you trust.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.NoStateSync = !stateSync
			j, err := node.Join(cmd.Context(), opts)
			if err != nil {
				return err
			}
			printJoined(cmd.OutOrStdout(), opts, j)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&opts.RPC, "rpc", nil, "CometBFT RPC URL of a node of the network (repeat for several)")
	f.StringVar(&opts.Home, "home", defaultHome(), "home directory of the new node")
	f.StringVar(&opts.Moniker, "moniker", "full-node", "node name")
	f.StringVar(&opts.HTTPAddr, "http", "127.0.0.1:8500", "HTTP API listen address")
	f.StringVar(&opts.DNSAddr, "dns", node.DefaultDNSAddr, "DNS interface listen address, UDP and TCP ('' for none)")
	f.StringVar(&opts.RPCAddr, "rpc-listen", "tcp://127.0.0.1:26657", "CometBFT RPC listen address of the new node")
	f.StringVar(&opts.P2PAddr, "p2p", "tcp://0.0.0.0:26656", "CometBFT P2P listen address of the new node")
	f.Int64Var(&opts.TrustHeight, "trust-height", 0, "height of the header to trust (default: the network's newest snapshot)")
	f.StringVar(&opts.TrustHash, "trust-hash", "", "hash of the block at --trust-height, from a node you trust")
	f.DurationVar(&opts.TrustPeriod, "trust-period", node.DefaultTrustPeriod, "how long the trusted header stays trusted: start the node within it")
	f.DurationVar(&opts.DiscoveryTime, "discovery-time", 15*time.Second, "how long the node listens for snapshots before restoring one (at least 5s)")
	f.BoolVar(&stateSync, "state-sync", true, "restore a snapshot (false: replay every block from genesis, if the network still keeps them)")
	_ = cmd.MarkFlagRequired("rpc")
	return cmd
}

// printJoined says what join wrote, what the node trusts and why, and how
// to start it.
func printJoined(w io.Writer, opts node.JoinOptions, j node.Joined) {
	fmt.Fprintf(w, "wrote %s: a full node of chain %s (node id %s)\n", opts.Home, j.ChainID, j.NodeID)
	fmt.Fprintf(w, "  persistent_peers  %s\n", strings.Join(j.Peers, ","))
	if opts.NoStateSync {
		fmt.Fprintf(w, "  state sync        off: the node replays every block from genesis\n")
	} else {
		fmt.Fprintf(w, "  [statesync]       rpc_servers %s\n", strings.Join(j.RPCServers, ","))
		fmt.Fprintf(w, "                    trust_height %d, trust_hash %s, trust_period %s\n", j.TrustHeight, j.TrustHash, opts.TrustPeriod)
		fmt.Fprintf(w, "  newest snapshot   height %d (the network keeps blocks from %d on)\n", j.Snapshot, j.EarliestBlock)
		if j.TrustedFrom != "" {
			fmt.Fprintf(w, `
The trusted hash is what %s says the block at height %d is:
trust on first use. The node's light client verifies every later header, the
snapshot's app hash among them, from this one, so if that node lied, the new
node follows its chain. Check the hash against a node you trust before
starting:
  curl -s http://OTHER:26657/commit?height=%d | jq -r .result.signed_header.commit.block_id.hash
`, j.TrustedFrom, j.TrustHeight, j.TrustHeight)
			if len(j.Confirmed) > 0 {
				fmt.Fprintf(w, "(%s gave the same hash.)\n", strings.Join(j.Confirmed, ", "))
			}
			if len(j.RPCServers) == 2 && j.RPCServers[0] == j.RPCServers[1] {
				fmt.Fprintf(w, "With one --rpc, the light client has no second node to cross-check headers with: give the RPC of two or more nodes if you can.\n")
			}
		}
	}
	if !opts.NoStateSync {
		fmt.Fprintf(w, "\nStart it while the network still keeps block %d (its nodes keep retain_blocks, 100000 by default) and within the trust period; else run join again.\n", j.TrustHeight)
	}
	fmt.Fprintf(w, "\nstart it with: bftmon start --home %s\n", opts.Home)
}
