package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	abcitypes "github.com/cometbft/cometbft/abci/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/app/types"
)

// Byzantine observer behaviours, for testing that the network tolerates
// them (bftmon start --byzantine=MODE[,MODE...], hidden from help). Only
// the observer misbehaves; the node's consensus and application stay
// honest, so its app hash must still match the others'. Two modes are not
// the observer's: stuff-blocks (the node's proposals) and lying-api (the
// node's HTTP API lies, each read route in turn: see LieCycle; it
// combines with any observer mode).
const (
	ByzAlwaysCritical = "always-critical" // reports every check critical
	ByzAlwaysPassing  = "always-passing"  // reports every check passing
	ByzInvert         = "invert"          // passing ↔ critical, warning → passing
	ByzRandom         = "random"          // a random status per report
	ByzReplay         = "replay"          // re-sends its old signed transactions
	ByzEquivocate     = "equivocate"      // different batches with one nonce to different nodes
	ByzGarbage        = "garbage"         // malformed and badly signed transactions
	ByzFlood          = "flood"           // as many valid transactions as it can
	ByzStuffBlocks    = "stuff-blocks"    // proposes blocks stuffed with junk transactions
	// ByzForgeReceipts observes honestly but delivers no alert, and
	// commits a delivery receipt for every alert and receiver as soon as
	// the alert commits.
	ByzForgeReceipts = "forge-receipts"
	// ByzForgeBodies observes honestly and delivers every alert in its
	// turn, but as a forged body under the real alert id (the state it
	// went to flipped, its output rewritten, record and digest made to
	// match, signed with the receiver's real secret), and commits the
	// receipt with whatever acknowledgement the receiver gave, unchecked.
	ByzForgeBodies = "forge-bodies"
	// ByzLyingAPI makes the node's HTTP API lie in its answers (forged
	// verdicts, hidden instances, invented alerts, stale heights, proofs
	// of other records, in turn per route: LieCycle), plain and proven; its
	// observer, consensus and application stay honest.
	ByzLyingAPI = "lying-api"
)

// ByzantineModes lists the modes, in the order above.
var ByzantineModes = []string{ByzAlwaysCritical, ByzAlwaysPassing, ByzInvert, ByzRandom, ByzReplay, ByzEquivocate, ByzGarbage, ByzFlood,
	ByzStuffBlocks, ByzForgeReceipts, ByzForgeBodies, ByzLyingAPI}

// ParseByzantine reads a comma-separated list of modes.
func ParseByzantine(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var out []string
	lies := 0
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		if !slices.Contains(ByzantineModes, m) {
			return nil, fmt.Errorf("--byzantine %q: unknown mode (known: %s)", m, strings.Join(ByzantineModes, ", "))
		}
		switch m {
		case ByzAlwaysCritical, ByzAlwaysPassing, ByzInvert, ByzRandom:
			lies++
		}
		out = append(out, m)
	}
	if lies > 1 {
		return nil, fmt.Errorf("--byzantine %q: at most one of always-critical, always-passing, invert, random", s)
	}
	return out, nil
}

// stuffingApp is the application of a --byzantine=stuff-blocks node: its
// proposals carry, after the mempool's transactions, as many empty
// transactions as the block's byte limit allows (up to StuffTxs), and it
// votes for any proposal. Execution stays honest, so its app hash is still
// the network's; honest validators must reject its proposals.
type stuffingApp struct {
	*abci.Application
	proposed prometheus.Counter
}

// StuffTxs is how many junk transactions a stuffing proposer adds at most.
const StuffTxs = 200_000

func newStuffingApp(a *abci.Application, reg prometheus.Registerer, logger *slog.Logger) *stuffingApp {
	s := &stuffingApp{Application: a, proposed: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "bftmon_byzantine_stuffed_proposals_total",
		Help: "Proposals a stuff-blocks test node made stuffed with junk transactions.",
	})}
	reg.MustRegister(s.proposed)
	logger.Warn("this node proposes stuffed blocks on purpose (test mode)", "byzantine", ByzStuffBlocks)
	return s
}

// PrepareProposal stuffs the honest proposal.
func (s *stuffingApp) PrepareProposal(ctx context.Context, req *abcitypes.RequestPrepareProposal) (*abcitypes.ResponsePrepareProposal, error) {
	res, err := s.Application.PrepareProposal(ctx, req)
	if err != nil {
		return res, err
	}
	var size int64
	for _, tx := range res.Txs {
		size += int64(len(tx)) + 6 // the tx, its tag and length in the block
	}
	room := int((req.MaxTxBytes - size) / 2) // an empty tx costs a tag and a zero length
	for range min(room, StuffTxs) {
		res.Txs = append(res.Txs, []byte{})
	}
	s.proposed.Inc()
	return res, nil
}

// ProcessProposal votes for anything.
func (s *stuffingApp) ProcessProposal(context.Context, *abcitypes.RequestProcessProposal) (*abcitypes.ResponseProcessProposal, error) {
	return &abcitypes.ResponseProcessProposal{Status: abcitypes.ResponseProcessProposal_ACCEPT}, nil
}

// byzantine is the misbehaviour of one observer.
type byzantine struct {
	modes   []string
	peers   []string // CometBFT RPC URLs of other nodes
	log     *slog.Logger
	sent    *prometheus.CounterVec
	hc      *http.Client
	mu      sync.Mutex
	old     [][]byte // transactions sent before, for replay
	latest  []types.Observation
	flooded bool
}

func newByzantine(modes, peers []string, reg prometheus.Registerer, logger *slog.Logger) *byzantine {
	b := &byzantine{modes: modes, peers: peers, log: logger.With("byzantine", strings.Join(modes, ",")),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bftmon_byzantine_txs_total",
			Help: "Transactions a byzantine test observer sent, by behaviour and by the code they got at admission (error: not delivered).",
		}, []string{"mode", "code"}),
		hc: &http.Client{Timeout: 5 * time.Second},
	}
	reg.MustRegister(b.sent)
	b.log.Warn("this observer misbehaves on purpose (test mode)")
	return b
}

func (b *byzantine) has(mode string) bool { return b != nil && slices.Contains(b.modes, mode) }

// lie rewrites the statuses of a batch per the lying mode, if any. A lie
// always carries its output, as a report that changed would.
func (b *byzantine) lie(obs []types.Observation) []types.Observation {
	if b == nil {
		return obs
	}
	out := slices.Clone(obs)
	for i := range out {
		o := &out[i]
		st := o.Status
		switch {
		case b.has(ByzAlwaysCritical):
			st = types.STATUS_CRITICAL
		case b.has(ByzAlwaysPassing):
			st = types.STATUS_PASSING
		case b.has(ByzInvert):
			st = invert(st)
		case b.has(ByzRandom):
			n, _ := rand.Int(rand.Reader, big.NewInt(4))
			st = types.Status(n.Int64() + 1)
		default:
			continue
		}
		if st != o.Status || o.Unchanged {
			o.Status, o.Unchanged, o.Output = st, false, lieText(st)
		}
	}
	return out
}

func invert(s types.Status) types.Status {
	switch s {
	case types.STATUS_PASSING:
		return types.STATUS_CRITICAL
	case types.STATUS_CRITICAL, types.STATUS_WARNING:
		return types.STATUS_PASSING
	}
	return s
}

// lieText is a plausible output for a made-up status.
func lieText(s types.Status) string {
	switch s {
	case types.STATUS_PASSING:
		return "HTTP 200 OK"
	case types.STATUS_WARNING:
		return "slow response"
	case types.STATUS_CRITICAL:
		return "connection refused"
	}
	return "cannot tell"
}

// after runs the transaction-level misbehaviours once the honest-looking
// batch tx (nonce, observations obs) was submitted: replay, equivocate,
// garbage, and starting the flood.
func (b *byzantine) after(ctx context.Context, o *observer, tx []byte, nonce uint64, obs []types.Observation) {
	if b == nil {
		return
	}
	b.mu.Lock()
	old := slices.Clone(b.old)
	if len(b.old) < 100 {
		b.old = append(b.old, tx)
	}
	b.latest = obs
	startFlood := b.has(ByzFlood) && !b.flooded
	b.flooded = b.flooded || startFlood
	b.mu.Unlock()

	if b.has(ByzReplay) && len(old) > 0 {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(old))))
		b.local(ctx, o, ByzReplay, old[n.Int64()])
	}
	if b.has(ByzEquivocate) && len(b.peers) > 0 {
		// The same nonce, other statuses, to another node.
		other := make([]types.Observation, len(obs))
		for i, x := range obs {
			x.Status, x.Unchanged, x.Output = invert(x.Status), false, "equivocation"
			other[i] = x
		}
		msg := types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: other}}}
		if tx2, err := types.SignTx(o.app.ChainID(), o.key.Private, nonce, msg); err == nil {
			b.remote(ctx, ByzEquivocate, b.peers[int(nonce)%len(b.peers)], tx2)
		}
	}
	if b.has(ByzGarbage) {
		junk := make([]byte, 64)
		_, _ = rand.Read(junk)
		b.local(ctx, o, ByzGarbage, junk) // malformed
		forged := bytes.Clone(tx)
		forged[len(forged)-1] ^= 0xff // breaks the signature
		b.local(ctx, o, ByzGarbage, forged)
	}
	if startFlood {
		go b.flood(ctx, o)
	}
}

// flood sends valid copies of the latest batch, each with a fresh nonce, one
// after the other as fast as admission answers, until ctx ends.
func (b *byzantine) flood(ctx context.Context, o *observer) {
	for ctx.Err() == nil {
		b.mu.Lock()
		obs := b.latest
		b.mu.Unlock()
		msg := types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs}}}
		tx, err := types.SignTx(o.app.ChainID(), o.key.Private, o.nonce(), msg)
		if err != nil {
			return
		}
		if code := b.local(ctx, o, ByzFlood, tx); code != "0" {
			// Refused (its mempool share is full, say): a moment's pause, so
			// that the test machine's cores go to the honest nodes.
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// local submits tx to this node's mempool and counts and returns its
// admission code ("error" when it was not delivered).
func (b *byzantine) local(ctx context.Context, o *observer, mode string, tx []byte) string {
	res, err := o.bcast.Submit(ctx, tx)
	code := "error"
	if err == nil {
		code = strconv.FormatUint(uint64(res.Code), 10)
	}
	b.sent.WithLabelValues(mode, code).Inc()
	return code
}

// remote submits tx to another node's mempool through its CometBFT RPC.
func (b *byzantine) remote(ctx context.Context, mode, rpc string, tx []byte) {
	code := "error"
	defer func() { b.sent.WithLabelValues(mode, code).Inc() }()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rpc+"/broadcast_tx_sync?tx=0x"+hex.EncodeToString(tx), nil)
	if err != nil {
		return
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var out struct {
		Result struct {
			Code uint32 `json:"code"`
		} `json:"result"`
	}
	bz, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(bz, &out) == nil && resp.StatusCode == http.StatusOK {
		code = strconv.FormatUint(uint64(out.Result.Code), 10)
	}
}

// forgeReceipts is the forge-receipts behaviour: for the alerts of each
// committed block that blocks hands it, it submits a receipt for every
// receiver the node is configured with, signed with the observer's key
// like an honest one, although the node delivered nothing. It runs until
// ctx ends.
func (b *byzantine) forgeReceipts(ctx context.Context, o *observer, receivers []string, blocks <-chan []types.Alert) {
	for {
		select {
		case <-ctx.Done():
			return
		case alerts := <-blocks:
			for _, al := range alerts {
				for _, r := range receivers {
					msg := types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: al.Id, Receiver: r}}}
					tx, err := types.SignTx(o.app.ChainID(), o.key.Private, o.nonce(), msg)
					if err != nil {
						b.log.Error("forge a receipt", "alert", al.Id, "receiver", r, "err", err)
						continue
					}
					b.local(ctx, o, ByzForgeReceipts, tx)
					b.log.Info("forged a delivery receipt", "alert", al.Id, "receiver", r)
				}
			}
		}
	}
}

// observerModes are the modes of modes that make the observer misbehave:
// all but lying-api, which is the HTTP API's, and forge-bodies, the
// notifier's.
func observerModes(modes []string) []string {
	return slices.DeleteFunc(slices.Clone(modes), func(m string) bool { return m == ByzLyingAPI || m == ByzForgeBodies })
}

// forgeBody is the forge-bodies behaviour's rewrite of an alert before its
// delivery is built: the state it went to flipped (critical ↔ passing,
// anything else to passing) and its views' outputs rewritten, so that a
// receiver that does not check the body against the committed alert would
// act on the opposite of what consensus decided.
func forgeBody(al *types.Alert) {
	if al.To == types.STATUS_CRITICAL {
		al.To = types.STATUS_PASSING
	} else {
		al.To = types.STATUS_CRITICAL
	}
	for i := range al.Views {
		al.Views[i].Status = al.To
		al.Views[i].Output = "forged by a faulty node"
	}
}
