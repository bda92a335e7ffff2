// Package api is bftmon's Go client and the JSON types of its HTTP API. The
// CLI, the tests and users share these types, as Consul's api package does.
// It depends on little more than the standard library.
package api

import (
	"github.com/bftmon/bftmon/app/types"

	"errors"
	"time"
)

// Status describes the node answering and the committed state it serves.
type Status struct {
	ChainID      string    `json:"chain_id"`
	Height       int64     `json:"height"`
	AppHash      string    `json:"app_hash"`
	BlockTime    time.Time `json:"block_time"`
	NodeID       string    `json:"node_id"`
	ObserverID   string    `json:"observer_id,omitempty"`
	ObserverName string    `json:"observer_name,omitempty"`
	Datacenter   string    `json:"datacenter,omitempty"`
	Version      string    `json:"version"`
	// RPC is the URL of this node's CometBFT RPC, where a verifying client
	// gets the signed block headers (package verify) unless told others.
	// Trusting it is not needed: every header is verified by the
	// validators' signatures, whoever serves it. A host 0.0.0.0 or [::]
	// means the host of the API.
	RPC string `json:"rpc,omitempty"`
	// Committing is false when the node has committed no block for a while
	// (node.StallAfter) or can commit no more; Problem then says why and
	// GET /v1/status answers 503. Everything the node answers is as of
	// Height, LastCommit ago.
	Committing bool      `json:"committing"`
	LastCommit time.Time `json:"last_commit"`
	Problem    string    `json:"problem,omitempty"`
	// CatchingUp is true while the node is still fetching blocks from its
	// peers (CometBFT's block sync) rather than taking part in consensus:
	// it takes no transactions then (POST /v1/txs answers 503 with
	// Retry-After). A node whose peers are not up yet stays here.
	CatchingUp bool `json:"catching_up"`
	// Peers is how many peers the node is connected to, of ExpectedPeers
	// (its persistent peers).
	Peers         int `json:"peers"`
	ExpectedPeers int `json:"expected_peers"`
	// PeerHeight is the highest height a connected peer has committed, as
	// far as this node knows (0: none known): how far a node catching up
	// has to go.
	PeerHeight int64 `json:"peer_height,omitempty"`
}

// ServiceSummary is one service in the service list.
type ServiceSummary struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"`
	// Status is the worst agreed hard status of its instances.
	Status string `json:"status"`
	// Tags is the union of its instances' tags.
	Tags []string `json:"tags"`
}

// Instance is one instance of a service with its checks.
type Instance struct {
	Service    string            `json:"service"`
	ID         string            `json:"id"`
	Address    string            `json:"address"`
	Port       int               `json:"port"`
	Datacenter string            `json:"datacenter"`
	Tags       []string          `json:"tags"`
	Meta       map[string]string `json:"meta"`
	// Status is the worst agreed hard status of its checks ("pending"
	// before the first); Verdict the worst current verdict, which can also
	// be "disputed" or "stale" while the hard status holds.
	Status           string  `json:"status"`
	Verdict          string  `json:"verdict"`
	RegisteredHeight int64   `json:"registered_height"`
	Checks           []Check `json:"checks"`
	// DistanceMs, with ?near=DC, is the median latency DC's observers
	// measured to this instance's datacenter (0 in DC itself; absent when
	// unknown).
	DistanceMs *float64 `json:"distance_ms,omitempty"`
}

// Check is a check with its verdict, hard status and observers' views.
type Check struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Target   string `json:"target"`
	Interval string `json:"interval"`
	Timeout  string `json:"timeout"`
	TTL      string `json:"ttl"`
	Confirm  string `json:"confirm"`
	// Status is the current verdict and StatusHeight the height it began.
	Status       string `json:"status"`
	StatusHeight int64  `json:"status_height"`
	// HardStatus is the confirmed status and HardHeight the height it changed.
	HardStatus string         `json:"hard_status"`
	HardHeight int64          `json:"hard_height"`
	Observers  []ObserverView `json:"observers"`
}

// ObserverView is one observer's latest report on a check.
type ObserverView struct {
	Observer   string  `json:"observer"`
	Name       string  `json:"name,omitempty"`
	Datacenter string  `json:"datacenter"`
	Status     string  `json:"status"`
	Fresh      bool    `json:"fresh"`
	Output     string  `json:"output,omitempty"`
	LatencyMs  float64 `json:"latency_ms,omitempty"`
	// Height is the block that committed the report; AsOf is when it
	// counts as observed: its own time, or the observer's later vouch that
	// it still holds (docs/ARCHITECTURE.md, "Unchanged reports").
	Height int64      `json:"height,omitempty"`
	AsOf   *time.Time `json:"as_of,omitempty"`
}

// Alert is a committed alert.
type Alert struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	From     string `json:"from"`
	To       string `json:"to"`
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Check    string `json:"check"`
	// Observer is the observer an observer_suspect alert is about.
	Observer string         `json:"observer,omitempty"`
	Height   int64          `json:"height"`
	Time     time.Time      `json:"time"`
	Views    []ObserverView `json:"views"`
	// Deliveries are the committed receipts: which node delivered the
	// alert to which receiver, and when.
	Deliveries []Delivery `json:"deliveries,omitempty"`
}

// NewAlert is the API's form of a committed alert; names maps observer ids
// to names.
func NewAlert(al *types.Alert, names map[string]string) Alert {
	a := Alert{
		ID: al.Id, Kind: al.Kind, From: al.From.Name(), To: al.To.Name(), Service: al.Service,
		Instance: al.Instance, Check: al.Check, Observer: al.Observer, Height: al.Height, Time: time.UnixMilli(al.TimeMs).UTC(),
	}
	for _, v := range al.Views {
		a.Views = append(a.Views, ObserverView{Observer: v.Observer, Name: names[v.Observer], Datacenter: v.Datacenter, Status: v.Status.Name(), Fresh: v.Fresh, Output: v.Output})
	}
	return a
}

// Delivery is a committed delivery receipt of an alert.
type Delivery struct {
	Receiver string `json:"receiver"`
	// Observer is the id of the observer key the delivering node signs
	// with; Name its name.
	Observer string    `json:"observer"`
	Name     string    `json:"name"`
	Height   int64     `json:"height"`
	Time     time.Time `json:"time"`
	// Acknowledged is set when the receipt carried the receiver's own
	// signed acknowledgement, verified against its registered key.
	Acknowledged bool `json:"acknowledged,omitempty"`
}

// Receiver is a webhook receiver's registered acknowledgement key.
type Receiver struct {
	Name string `json:"name"`
	// PubKey is the base64 ed25519 public key; KeyID its id.
	PubKey string `json:"pub_key"`
	KeyID  string `json:"key_id"`
	// Operator names the operator who registered it (its key id if it is
	// no longer an operator).
	Operator string `json:"operator"`
	Height   int64  `json:"height"`
}

// Observer is a member of the observer set with its standing: over the last
// five minutes of block time, how many of its reports agreed and disagreed
// with the verdicts the observers agreed on.
type Observer struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Datacenter string `json:"datacenter"`
	Weight     uint64 `json:"weight"`
	Agreed     uint64 `json:"agreed"`
	Disagreed  uint64 `json:"disagreed"`
	// DisagreedPercent is Disagreed over all counted reports (0 with none).
	DisagreedPercent float64 `json:"disagreed_percent"`
	// Suspect is set once the disagreeing share crosses the threshold (with
	// enough reports), and cleared when it falls below half of it.
	Suspect       bool  `json:"suspect"`
	SuspectHeight int64 `json:"suspect_height,omitempty"`
	// VouchedAt and VouchHeight are the observer's vouch in force for its
	// unchanged reports (docs/ARCHITECTURE.md, "Unchanged reports"): as of
	// when, committed at which height (zero: none since its last break).
	VouchedAt   *time.Time `json:"vouched_at,omitempty"`
	VouchHeight int64      `json:"vouch_height,omitempty"`
	// VouchFloorHeight is the height of its last break: no later vouch
	// covers the reports it committed at or before it, until it sends them
	// again.
	VouchFloorHeight int64 `json:"vouch_floor_height,omitempty"`
}

// AppHash is the application hash after the block at Height.
type AppHash struct {
	Height  int64  `json:"height"`
	AppHash string `json:"app_hash"`
}

// TxResult is the outcome of a transaction: Code 0 is committed; any other
// code is a refusal with Log saying why.
type TxResult struct {
	Hash   string `json:"hash"`
	Height int64  `json:"height"`
	Code   uint32 `json:"code"`
	Log    string `json:"log"`
}

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
}

// ErrNotFound matches errors for names the node does not know.
var ErrNotFound = errors.New("not found")

// PassiveResult is a result submitted for a passive check (POST /v1/observe,
// `bftmon submit`): the local node's observer signs it into its next batch.
type PassiveResult struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	Check    string `json:"check"`
	// Code is the Nagios plugin code: 0 passing, 1 warning, 2 critical, 3 unknown.
	Code int `json:"code"`
	// Output is the plugin's output; performance data after '|' is parsed
	// and exported on /metrics.
	Output string `json:"output"`
}

// ObserveAck is the answer to an accepted passive result: it is queued for
// the observer's next flush.
type ObserveAck struct {
	Observer string `json:"observer"`
	Check    string `json:"check"`
	Status   string `json:"status"`
}

// ErrBadRequest matches errors for requests the node refuses as invalid.
var ErrBadRequest = errors.New("bad request")

// ErrNotReady matches errors for requests the node could not take yet and
// did not take at all (it is catching up, or starting): the same request,
// the same signed transaction included, may be sent again. The API answers
// them 503 with Retry-After.
var ErrNotReady = errors.New("node not ready")

// ErrUnauthorized matches errors for requests that lack the credentials a
// route requires (POST /v1/observe: the node's observe token).
var ErrUnauthorized = errors.New("unauthorized")

// QueryOptions are a read's filters and blocking. Each route takes the ones
// that apply to it (see the README); unset fields are not sent.
type QueryOptions struct {
	// Status keeps what has one of these statuses: passing, warning,
	// critical, unknown, pending, or the verdicts disputed and stale.
	Status []string
	// Tags keeps instances that carry all of them.
	Tags []string
	// Datacenter keeps instances in that datacenter (observers, for
	// /v1/observers).
	Datacenter string
	// Meta keeps instances whose meta has all these pairs.
	Meta map[string]string
	// Near orders instances nearest that datacenter first.
	Near string
	// Service and Kind filter alerts; Limit caps their number; Pending
	// keeps the alerts no node has yet committed a delivery receipt for.
	Service string
	Kind    string
	Limit   int
	Pending bool
	// WaitIndex makes the read block until the answer's index is above it,
	// or WaitTime (default 5m, at most 10m) has passed.
	WaitIndex int64
	WaitTime  time.Duration
}

// QueryMeta is what a read's response says besides its body.
type QueryMeta struct {
	// Index is the height at which the answer last changed
	// (X-Bftmon-Index): pass it as WaitIndex to wait for the next change.
	Index int64
}

// IndexHeader is the response header carrying a read's index.
const IndexHeader = "X-Bftmon-Index"
