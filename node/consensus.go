package node

import (
	"fmt"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
)

// Network profiles: the consensus settings `bftmon init`, `testnet` and
// `join` write for where the validators are (--network).
const (
	// NetworkLAN is for validators on one machine or in one datacenter
	// (round trips under a few milliseconds), the default: a block starts
	// 15 ms after the last when a transaction is waiting, so a write
	// commits in about one consensus round, and an idle network makes
	// about two blocks a second.
	NetworkLAN = "lan"
	// NetworkWAN is for validators in datacenters far apart (round trips
	// of tens to hundreds of milliseconds): CometBFT's own timeouts, which
	// leave a proposal and its votes time to cross the network before a
	// round is given up, at the price of a slower write when a validator
	// is down and of rounds that take longer to fail.
	NetworkWAN = "wan"
)

// IdleBlockInterval is how often an idle network makes a block
// (create_empty_blocks_interval): often enough for verdict time, which moves
// only at blocks (a report going stale, a session's TTL, a confirm delay
// are seen at the first block past them), and far below the 30 s the app
// takes for a halt (app.HaltGapMs).
const IdleBlockInterval = time.Second

// checkNetwork refuses a profile tuneConsensus does not know.
func checkNetwork(profile string) error {
	switch profile {
	case "", NetworkLAN, NetworkWAN:
		return nil
	}
	return fmt.Errorf("--network %q: want %s (validators in one datacenter or on one machine) or %s (datacenters far apart)", profile, NetworkLAN, NetworkWAN)
}

// tuneConsensus writes profile's consensus settings into cfg; profile has
// passed checkNetwork.
func tuneConsensus(cfg *cmtcfg.Config, profile string) {
	c := cfg.Consensus
	// Every profile: an idle network makes a block every
	// IdleBlockInterval, and a block starts as soon as a transaction waits
	// (after timeout_commit). The app leaves the state as it was in a block
	// that changes nothing (genesis quiet_ms, app.DefaultQuietMs), so the block after it need not
	// come at once to carry a new app hash.
	c.CreateEmptyBlocks, c.CreateEmptyBlocksInterval = true, IdleBlockInterval
	c.SkipTimeoutCommit = false
	switch profile {
	case "", NetworkLAN:
		c.TimeoutPropose, c.TimeoutProposeDelta = 800*time.Millisecond, 100*time.Millisecond
		c.TimeoutPrevote, c.TimeoutPrevoteDelta = 200*time.Millisecond, 100*time.Millisecond
		c.TimeoutPrecommit, c.TimeoutPrecommitDelta = 200*time.Millisecond, 100*time.Millisecond
		// The pause between a height's commit and the next proposal.
		// The block after one that changed the app hash comes at once
		// (it carries that hash); the pause lets a client's next write,
		// sent when its last one was answered, still get into it. Skipping
		// the pause (skip_timeout_commit) made a lone client's writes
		// miss that block and wait two rounds each: 92 ms instead of 50
		// (bench kv, 4 nodes on loopback).
		c.TimeoutCommit = 15 * time.Millisecond
		// How long a peer's gossip routine sleeps with nothing to send:
		// CometBFT's 100 ms is a hop's delay, paid at each step of a
		// round. 2 ms keeps a round at about 35 ms on loopback; the idle
		// network's wake-ups cost about 20 % of a core across four nodes.
		c.PeerGossipSleepDuration = 2 * time.Millisecond
	default: // NetworkWAN
		def := cmtcfg.DefaultConsensusConfig()
		c.TimeoutPropose, c.TimeoutProposeDelta = def.TimeoutPropose, def.TimeoutProposeDelta
		c.TimeoutPrevote, c.TimeoutPrevoteDelta = def.TimeoutPrevote, def.TimeoutPrevoteDelta
		c.TimeoutPrecommit, c.TimeoutPrecommitDelta = def.TimeoutPrecommit, def.TimeoutPrecommitDelta
		c.TimeoutCommit = def.TimeoutCommit
		c.PeerGossipSleepDuration = def.PeerGossipSleepDuration
	}
}
