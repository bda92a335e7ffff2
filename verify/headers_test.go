package verify_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cometbft/cometbft/crypto/ed25519"
	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/verify"
)

// blockHash is the hash of the block at height, as the node's RPC says.
func blockHash(ctx context.Context, t *testing.T, rpc string, height int64) []byte {
	t.Helper()
	c, err := rpchttp.New(rpc, "/websocket")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Commit(ctx, &height)
	if err != nil {
		t.Fatal(err)
	}
	return res.SignedHeader.Hash()
}

// TestHeadersVerify: on a real one-node network, headers verify from the
// genesis validators and from a trusted height and hash, and AppHash gives
// the app hash the node committed; a wrong trust hash, another chain, other
// genesis validators, forged commit signatures and a stale header are
// refused, each error naming what failed.
func TestHeadersVerify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	net := startNet(t)
	rpc := net.node.RPCURL()

	check := func(t *testing.T, h *verify.Headers) {
		t.Helper()
		v := net.node.Height() - 1
		got, at, err := h.AppHash(ctx, v)
		if err != nil {
			t.Fatalf("AppHash(%d): %v", v, err)
		}
		want, err := net.node.AppHashAt(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("AppHash(%d) = %X, the node committed %X", v, got, want)
		}
		if time.Since(at) > time.Minute {
			t.Errorf("AppHash(%d): header time %s", v, at)
		}
	}
	refused := func(t *testing.T, err error, want ...string) {
		t.Helper()
		if !errors.Is(err, verify.ErrNotVerified) {
			t.Fatalf("got %v, want an error matching ErrNotVerified", err)
		}
		for _, w := range want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	}

	t.Run("genesis", func(t *testing.T) {
		h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, Genesis: net.genesis(t)})
		if err != nil {
			t.Fatal(err)
		}
		if h.TrustHeight() != 1 || h.ChainID() != "verify-chain" {
			t.Errorf("genesis root: height %d chain %q", h.TrustHeight(), h.ChainID())
		}
		check(t, h)
	})
	t.Run("trusted hash", func(t *testing.T) {
		h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, ChainID: "verify-chain", TrustHeight: 2, TrustHash: blockHash(ctx, t, rpc, 2)})
		if err != nil {
			t.Fatal(err)
		}
		check(t, h)
	})
	t.Run("wrong trust hash", func(t *testing.T) {
		wrong := blockHash(ctx, t, rpc, 2)
		wrong[0] ^= 1
		_, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, ChainID: "verify-chain", TrustHeight: 2, TrustHash: wrong})
		refused(t, err, "trust root", "hash")
	})
	t.Run("other chain id", func(t *testing.T) {
		_, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, ChainID: "other-chain", TrustHeight: 2, TrustHash: blockHash(ctx, t, rpc, 2)})
		refused(t, err, "other-chain")
		g := net.genesis(t)
		g.ChainID = "other-chain"
		_, err = verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, Genesis: g})
		refused(t, err, "header 1")
	})
	t.Run("other genesis validators", func(t *testing.T) {
		g := net.genesis(t)
		pk := ed25519.GenPrivKey().PubKey()
		g.Validators = []cmttypes.GenesisValidator{{Address: pk.Address(), PubKey: pk, Power: 10}}
		_, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, Genesis: g})
		refused(t, err, "header 1", "not the genesis validators")
	})
	t.Run("forged signatures of header 1", func(t *testing.T) {
		fake := newTamperRPC(t, rpc, 1)
		_, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{fake.URL}, Genesis: net.genesis(t)})
		refused(t, err, "header 1", "signatures")
	})
	t.Run("forged signatures later", func(t *testing.T) {
		// Honest headers up to the trust root, forged ones after it.
		fake := newTamperRPC(t, rpc, 1<<62)
		h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{fake.URL}, Genesis: net.genesis(t)})
		if err != nil {
			t.Fatal(err)
		}
		fake.from.Store(2)
		_, _, err = h.AppHash(ctx, net.node.Height()-1)
		refused(t, err, "signatures")
		if fake.tampered.Load() == 0 {
			t.Fatal("no commit was forged")
		}
		// With the honest RPC as a witness the forged header is refused
		// all the same (the light client does not fall back to the
		// witness for the target header); never taken.
		h, err = verify.NewHeaders(ctx, verify.Options{RPC: []string{fake.URL, rpc}, ChainID: "verify-chain", TrustHeight: 1, TrustHash: blockHash(ctx, t, rpc, 1)})
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = h.AppHash(ctx, net.node.Height()-1)
		refused(t, err, "signatures")
	})
	t.Run("RPC down for a while", func(t *testing.T) {
		// Headers that could not be had while the RPC was down (a node
		// restarting) verify again once it is back.
		rpcFront := newTamperRPC(t, rpc, 1<<62)
		h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpcFront.URL}, Genesis: net.genesis(t)})
		if err != nil {
			t.Fatal(err)
		}
		rpcFront.down.Store(true)
		_, _, err = h.AppHash(ctx, net.node.Height()-1)
		refused(t, err, "header")
		rpcFront.down.Store(false)
		check(t, h)
	})
	t.Run("stale", func(t *testing.T) {
		later := func() time.Time { return time.Now().Add(time.Minute) }
		h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, Genesis: net.genesis(t), Now: later, MaxAge: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		v := net.node.Height() - 1
		_, _, err = h.AppHash(ctx, v)
		refused(t, err, "stale height")
		var se *verify.StaleError
		if !errors.As(err, &se) || se.Height != v || se.Age < time.Minute-time.Second {
			t.Errorf("a stale answer is not told as a StaleError of height %d about a minute old: %#v", v, se)
		}
	})
	t.Run("no trust root", func(t *testing.T) {
		_, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{rpc}, ChainID: "verify-chain"})
		refused(t, err, "no trust root")
	})
}
