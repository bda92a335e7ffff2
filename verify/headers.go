// Package verify is the client side of verifiable reads: a CometBFT light
// client that verifies block headers by the validators' signatures from a
// trust root (Headers), a client that checks a node's proven answers
// against those headers and rebuilds them from the proven records
// (Client), and an HTTP proxy that serves the read API only from answers
// it verified (Proxy).
package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	dbm "github.com/cometbft/cometbft-db"
	"github.com/cometbft/cometbft/light"
	"github.com/cometbft/cometbft/light/provider"
	lighthttp "github.com/cometbft/cometbft/light/provider/http"
	lightstore "github.com/cometbft/cometbft/light/store"
	lightdb "github.com/cometbft/cometbft/light/store/db"
	cmttypes "github.com/cometbft/cometbft/types"
)

// ErrNotVerified is what every failure to verify an answer or a header
// matches (errors.Is): the answer must not be used as verified.
var ErrNotVerified = errors.New("not verified")

// DefaultTrustPeriod is how long a verified header stays a trust root for
// later ones when Options.TrustPeriod is 0: a week, well inside the
// validators' unbonding period, as CometBFT's light client advises.
const DefaultTrustPeriod = 168 * time.Hour

// DefaultMaxAge is how old the header carrying an answer's app hash may be
// when Options.MaxAge is 0: older answers are refused as stale.
const DefaultMaxAge = 30 * time.Second

// Options say what Headers trusts and where it gets headers from.
type Options struct {
	// ChainID is the network's chain id; with Genesis it may be empty (the
	// genesis file's is used) and must match it otherwise.
	ChainID string
	// RPC are CometBFT RPC URLs (http://host:26657): the first is the
	// primary, the others witnesses against which every header is
	// cross-checked. With one URL it is its own witness (no fork
	// detection, signatures are still checked).
	RPC []string

	// The trust root: either Genesis, a genesis document the user trusts
	// (header 1 must carry its validator set's hash and be signed by more
	// than 2/3 of it), or TrustHeight with TrustHash, the hash of the
	// block at that height read from a source the user trusts.
	Genesis     *cmttypes.GenesisDoc
	TrustHeight int64
	TrustHash   []byte

	// TrustPeriod is how long a verified header may serve to verify later
	// ones (0: DefaultTrustPeriod). A trust root older than that is
	// refused.
	TrustPeriod time.Duration
	// MaxAge is how old a header may be for AppHash (0: DefaultMaxAge).
	MaxAge time.Duration
	// Now is the clock (nil: time.Now); tests set it.
	Now func() time.Time
}

// Headers verifies block headers with CometBFT's light client, keeping
// the verified ones in memory. It is safe for concurrent use.
type Headers struct {
	opts    Options
	chainID string
	root    light.TrustOptions

	mu     sync.Mutex
	store  lightstore.Store
	client *light.Client // nil after a failure: rebuilt from store
}

// NewHeaders establishes the trust root of opts: it fetches the trusted
// header from the primary, checks it against the genesis validators or the
// trusted hash and the witnesses, and keeps it.
func NewHeaders(ctx context.Context, opts Options) (*Headers, error) {
	if opts.TrustPeriod == 0 {
		opts.TrustPeriod = DefaultTrustPeriod
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if len(opts.RPC) == 0 {
		return nil, fmt.Errorf("light client: no CometBFT RPC URL to get headers from: %w", ErrNotVerified)
	}
	h := &Headers{opts: opts, chainID: opts.ChainID}
	switch {
	case opts.Genesis != nil && opts.TrustHeight != 0:
		return nil, fmt.Errorf("light client: both a genesis file and a trusted height given: choose one trust root: %w", ErrNotVerified)
	case opts.Genesis != nil:
		if h.chainID == "" {
			h.chainID = opts.Genesis.ChainID
		}
		if h.chainID != opts.Genesis.ChainID {
			return nil, fmt.Errorf("light client: chain id %q is not the genesis file's %q: %w", h.chainID, opts.Genesis.ChainID, ErrNotVerified)
		}
		root, err := h.genesisRoot(ctx)
		if err != nil {
			return nil, err
		}
		h.root = root
	case opts.TrustHeight > 0:
		if len(opts.TrustHash) == 0 {
			return nil, fmt.Errorf("light client: trusted height %d without its hash: %w", opts.TrustHeight, ErrNotVerified)
		}
		if h.chainID == "" {
			return nil, fmt.Errorf("light client: no chain id: %w", ErrNotVerified)
		}
		h.root = light.TrustOptions{Period: opts.TrustPeriod, Height: opts.TrustHeight, Hash: opts.TrustHash}
	default:
		return nil, fmt.Errorf("light client: no trust root: give a genesis file you trust, or a trusted height and hash: %w", ErrNotVerified)
	}
	h.store = lightdb.New(dbm.NewMemDB(), h.chainID)
	c, err := light.NewClient(ctx, h.chainID, h.root, h.primary(), h.witnesses(), h.store)
	if err != nil {
		return nil, fmt.Errorf("light client: trust root: header %d (hash %X) from %s: %v: %w", h.root.Height, h.root.Hash, opts.RPC[0], err, ErrNotVerified)
	}
	if err := h.fresh(h.root.Height); err != nil {
		return nil, err
	}
	h.client = c
	return h, nil
}

// ChainID is the chain whose headers h verifies.
func (h *Headers) ChainID() string { return h.chainID }

// TrustHeight is the height of the trust root in use (1 for a genesis
// root).
func (h *Headers) TrustHeight() int64 { return h.root.Height }

// TrustHash is the hash of the trusted header at TrustHeight.
func (h *Headers) TrustHash() []byte { return h.root.Hash }

// fresh fails if the trusted header at height is older than the trusting
// period (the light client checks that only when it verifies later ones).
func (h *Headers) fresh(height int64) error {
	lb, err := h.store.LightBlock(height)
	if err != nil {
		return fmt.Errorf("light client: trusted header %d: %v: %w", height, err, ErrNotVerified)
	}
	if light.HeaderExpired(lb.SignedHeader, h.opts.TrustPeriod, h.opts.Now()) {
		return fmt.Errorf("light client: trusted header %d of %s is older than the trusting period %s: trust a recent header (--trust-height, --trust-hash): %w",
			height, lb.Time.UTC().Format(time.RFC3339), h.opts.TrustPeriod, ErrNotVerified)
	}
	return nil
}

// genesisRoot checks header 1 against the genesis validators: it must
// carry their hash and be signed by more than 2/3 of their power. Header 1
// is then trusted by its hash.
func (h *Headers) genesisRoot(ctx context.Context) (light.TrustOptions, error) {
	g := h.opts.Genesis
	if err := g.ValidateAndComplete(); err != nil {
		return light.TrustOptions{}, fmt.Errorf("light client: genesis: %v: %w", err, ErrNotVerified)
	}
	vals := make([]*cmttypes.Validator, len(g.Validators))
	for i, v := range g.Validators {
		vals[i] = cmttypes.NewValidator(v.PubKey, v.Power)
	}
	set := cmttypes.NewValidatorSet(vals)
	p, err := lighthttp.New(h.chainID, h.opts.RPC[0])
	if err != nil {
		return light.TrustOptions{}, fmt.Errorf("light client: RPC %s: %v: %w", h.opts.RPC[0], err, ErrNotVerified)
	}
	first := g.InitialHeight
	if first < 1 {
		first = 1
	}
	lb, err := p.LightBlock(ctx, first)
	if err != nil {
		return light.TrustOptions{}, fmt.Errorf("light client: header %d from %s: %v (a node that prunes old blocks no longer has it: trust a recent header with --trust-height and --trust-hash instead of the genesis file): %w",
			first, h.opts.RPC[0], err, ErrNotVerified)
	}
	if !bytes.Equal(lb.ValidatorsHash, set.Hash()) {
		return light.TrustOptions{}, fmt.Errorf("light client: header %d from %s: validators hash %X is not the genesis validators' %X: %w",
			first, h.opts.RPC[0], lb.ValidatorsHash, set.Hash(), ErrNotVerified)
	}
	if err := set.VerifyCommitLight(h.chainID, lb.Commit.BlockID, lb.Height, lb.Commit); err != nil {
		return light.TrustOptions{}, fmt.Errorf("light client: header %d from %s: signatures: not signed by more than 2/3 of the genesis validators: %v: %w",
			first, h.opts.RPC[0], err, ErrNotVerified)
	}
	return light.TrustOptions{Period: h.opts.TrustPeriod, Height: first, Hash: lb.Hash()}, nil
}

// primary is a fresh provider of the first RPC URL.
func (h *Headers) primary() provider.Provider { return h.provider(h.opts.RPC[0]) }

// witnesses are fresh providers of the other URLs, or of the primary's
// again when it is the only one (the light client wants a witness).
func (h *Headers) witnesses() []provider.Provider {
	urls := h.opts.RPC[1:]
	if len(urls) == 0 {
		urls = h.opts.RPC[:1]
	}
	var ws []provider.Provider
	for _, u := range urls {
		ws = append(ws, h.provider(u))
	}
	return ws
}

func (h *Headers) provider(url string) provider.Provider {
	p, err := lighthttp.New(h.chainID, url)
	if err != nil {
		return badProvider{h.chainID, url, err}
	}
	return p
}

// badProvider stands for an RPC URL that does not parse: every request
// fails with why.
type badProvider struct {
	chainID, url string
	err          error
}

func (b badProvider) ChainID() string { return b.chainID }
func (b badProvider) String() string  { return b.url }
func (b badProvider) LightBlock(context.Context, int64) (*cmttypes.LightBlock, error) {
	return nil, fmt.Errorf("RPC %s: %w", b.url, b.err)
}
func (b badProvider) ReportEvidence(context.Context, cmttypes.Evidence) error { return b.err }

// Header returns the verified header at height.
func (h *Headers) Header(ctx context.Context, height int64) (*cmttypes.SignedHeader, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if lb, err := h.store.LightBlock(height); err == nil {
		return lb.SignedHeader, nil
	}
	if err := h.ensureClient(); err != nil {
		return nil, err
	}
	lb, err := h.client.VerifyLightBlockAtHeight(ctx, height, h.opts.Now())
	if err != nil {
		h.client = nil
		return nil, fmt.Errorf("header %d: %s: %w", height, describe(err), ErrNotVerified)
	}
	return lb.SignedHeader, nil
}

// describe says what of a header did not verify, in the light client's
// words with a plain prefix.
func describe(err error) string {
	msg := err.Error()
	var inv light.ErrInvalidHeader
	var bad provider.ErrBadLightBlock
	switch {
	case errors.As(err, &inv), strings.Contains(msg, "invalid commit"), strings.Contains(msg, "wrong signature"):
		return "signatures do not verify: " + msg
	case errors.As(err, &bad):
		return "bad light block: " + msg
	case errors.Is(err, light.ErrLightClientAttack):
		return "conflicting headers from the witnesses (an attack or a fork): " + msg
	case errors.Is(err, provider.ErrHeightTooHigh), errors.Is(err, provider.ErrLightBlockNotFound):
		return "not available: " + msg
	}
	var exp light.ErrOldHeaderExpired
	if errors.As(err, &exp) {
		return "the trusted header expired (older than the trusting period): " + msg
	}
	return msg
}

// StaleError refuses an answer read at a height whose header (the one
// after it, which carries its app hash) is older than MaxAge: true once,
// perhaps, but not known to be true now. The node that gave it may be
// honest and behind, or the chain may have stopped; either way the answer
// is not verified. It wraps ErrNotVerified.
type StaleError struct {
	// Height is the height the answer was read at.
	Height int64
	// HeaderTime is the time of header Height+1.
	HeaderTime time.Time
	// Age is how old that header was when checked.
	Age time.Duration
	// MaxAge is the limit it passed.
	MaxAge time.Duration
}

// Error says which height is stale and by how much.
func (e *StaleError) Error() string {
	return fmt.Sprintf("stale height %d: its header %d is %s old (max age %s): %s",
		e.Height, e.Height+1, e.Age.Round(time.Millisecond), e.MaxAge, ErrNotVerified)
}

// Unwrap makes errors.Is(err, ErrNotVerified) true.
func (e *StaleError) Unwrap() error { return ErrNotVerified }

// AppHash returns the app hash after version (the hash that the verified
// header version+1 carries) and that header's time. A header older than
// MaxAge is refused as stale.
func (h *Headers) AppHash(ctx context.Context, version int64) ([]byte, time.Time, error) {
	return h.appHash(ctx, version, h.opts.MaxAge)
}

// MaxAge is how old a header may be for AppHash.
func (h *Headers) MaxAge() time.Duration { return h.opts.MaxAge }

// appHash is AppHash with a header at most maxAge old.
func (h *Headers) appHash(ctx context.Context, version int64, maxAge time.Duration) ([]byte, time.Time, error) {
	if version < 1 {
		return nil, time.Time{}, fmt.Errorf("version %d: no app hash to verify against: %w", version, ErrNotVerified)
	}
	sh, err := h.Header(ctx, version+1)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("app hash of height %d: %w", version, err)
	}
	if age := h.opts.Now().Sub(sh.Time); age > maxAge {
		return nil, sh.Time, &StaleError{Height: version, HeaderTime: sh.Time, Age: age, MaxAge: maxAge}
	}
	return sh.AppHash, sh.Time, nil
}

// Latest verifies the newest header the primary has and returns it.
func (h *Headers) Latest(ctx context.Context) (*cmttypes.SignedHeader, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.ensureClient(); err != nil {
		return nil, err
	}
	if _, err := h.client.Update(ctx, h.opts.Now()); err != nil {
		h.client = nil
		return nil, fmt.Errorf("newest header: %s: %w", describe(err), ErrNotVerified)
	}
	lb, err := h.client.TrustedLightBlock(0)
	if err != nil {
		return nil, fmt.Errorf("newest header: %v: %w", err, ErrNotVerified)
	}
	return lb.SignedHeader, nil
}

// ensureClient makes a light client from the trusted store if the last
// one was dropped. h.mu is held.
func (h *Headers) ensureClient() error {
	if h.client != nil {
		return nil
	}
	// The light client drops providers for good (a failing primary is
	// replaced by a witness that answers, an erring witness removed): nodes
	// that restart must not leave us without any. The store keeps what
	// was verified.
	c, err := light.NewClientFromTrustedStore(h.chainID, h.opts.TrustPeriod, h.primary(), h.witnesses(), h.store)
	if err != nil {
		return fmt.Errorf("light client: %v: %w", err, ErrNotVerified)
	}
	h.client = c
	return nil
}
