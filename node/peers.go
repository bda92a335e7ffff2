package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	cmtcs "github.com/cometbft/cometbft/consensus"
	cmttypes "github.com/cometbft/cometbft/types"
)

// syncState says whether the node is still catching up (block sync), how
// many peers it has of its persistent peers, and the highest height a
// connected peer has committed as far as its consensus reactor knows.
func (n *Node) syncState() (catchingUp bool, peers, expected int, peerHeight int64) {
	if n.comet == nil {
		return true, 0, 0, 0
	}
	expected = len(splitPeers(n.comet.Config().P2P.PersistentPeers))
	catchingUp = n.comet.ConsensusReactor().WaitSync()
	for _, p := range n.comet.Switch().Peers().Copy() {
		peers++
		if ps, ok := p.Get(cmttypes.PeerStateKey).(*cmtcs.PeerState); ok {
			// A peer's consensus height is the one it works on: it has
			// committed the one before.
			if h := ps.GetHeight() - 1; h > peerHeight {
				peerHeight = h
			}
		}
	}
	return catchingUp, peers, expected, peerHeight
}

// splitPeers splits a persistent_peers value ("id@host:port,...").
func splitPeers(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// PeerNameWait is how long a starting node waits for its persistent peers'
// host names to resolve before it starts without the ones that do not.
const PeerNameWait = 2 * time.Minute

// peerNameRetry is how often a starting node looks its peers' names up
// again while some do not resolve, and peerNameProgress how often it says
// which.
const (
	peerNameRetry    = 500 * time.Millisecond
	peerNameProgress = 5 * time.Second
)

// lookupHost resolves a host name (a variable for tests).
var lookupHost = net.DefaultResolver.LookupHost

// waitPeerNames waits until every host name among peers ("id@host:port")
// resolves, for at most wait, logging which do not every few seconds.
//
// CometBFT resolves persistent_peers once, when the node is created, and
// silently drops a peer whose name does not resolve: it never dials it.
// In Docker a peer container that has not started yet has no name in the
// embedded DNS, so a node started before its peers would otherwise never
// dial them. A name that still does not resolve after wait is left to
// CometBFT (the peer can still dial this node) with a warning. IP
// addresses resolve at once; the wait ends early with ctx.
func waitPeerNames(ctx context.Context, peers []string, wait time.Duration, log *slog.Logger) error {
	var names []string
	for _, p := range peers {
		hostport := p[strings.LastIndex(p, "@")+1:]
		host, _, err := net.SplitHostPort(hostport)
		if err != nil {
			return fmt.Errorf("persistent peer %q: want ID@HOST:PORT: %w (fix p2p.persistent_peers in config/config.toml)", p, err)
		}
		if net.ParseIP(host) == nil {
			names = append(names, host)
		}
	}
	if len(names) == 0 {
		return nil
	}
	start := time.Now()
	lastLog := start
	for {
		var missing []string
		for _, h := range names {
			lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := lookupHost(lctx, h)
			cancel()
			if err != nil {
				missing = append(missing, h)
			}
		}
		if len(missing) == 0 {
			if time.Since(start) > peerNameRetry {
				log.Info("peer host names resolve now: starting", "peers", strings.Join(names, ","), "waited", time.Since(start).Round(time.Second).String())
			}
			return nil
		}
		waited := time.Since(start)
		if waited >= wait {
			log.Warn("peer host names still do not resolve: starting without dialling them (they dial this node when they start)",
				"unresolved", strings.Join(missing, ","), "waited", waited.Round(time.Second).String())
			return nil
		}
		if time.Since(lastLog) >= peerNameProgress || waited < peerNameRetry {
			log.Info("waiting for peer host names to resolve (peer containers not started yet?)",
				"unresolved", strings.Join(missing, ","), "resolved", len(names)-len(missing), "of", len(names),
				"waited", waited.Round(time.Second).String(), "gives_up_in", (wait - waited).Round(time.Second).String())
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for peer host names %s to resolve: %w", strings.Join(missing, ","), ctx.Err())
		case <-time.After(peerNameRetry):
		}
	}
}

// peerProgress is how often a node that is catching up, or misses peers,
// says so.
const peerProgress = 10 * time.Second

// watchPeers logs, every interval until ctx ends, while the node is still
// catching up or connected to fewer than all its persistent peers: how many
// it has, and how far it is. A node whose peers are not up yet keeps
// running and says what it waits for, instead of exiting.
func (n *Node) watchPeers(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		catchingUp, peers, expected, peerHeight := n.syncState()
		if !catchingUp && peers >= expected {
			continue
		}
		height, _, problem := n.health.state()
		args := []any{"peers", peers, "of", expected, "height", height, "catching_up", catchingUp}
		if peerHeight > height {
			args = append(args, "peer_height", peerHeight)
		}
		if problem != nil {
			args = append(args, "committing", false)
		}
		if peers == 0 {
			n.log.Warn("waiting for peers: none connected yet (are the other nodes up and reachable?)", args...)
		} else {
			n.log.Info("waiting for peers", args...)
		}
	}
}

// heightText says how far a node catching up is: "height 12 of 40", or
// "height 12" when no peer is known to be further.
func heightText(height, peerHeight int64) string {
	if peerHeight > height {
		return fmt.Sprintf("height %d of %d", height, peerHeight)
	}
	return fmt.Sprintf("height %d", height)
}
