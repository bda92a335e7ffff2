package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/node"
)

// TestConsulLockAcrossNodes runs Consul's own Go client (api v1.34.5)
// unchanged against two nodes of a real 4-node network, one in each
// datacenter: its KV CAS from both sides, then its Lock helper as two
// contenders, one per node, each node mapping the contender's token to
// the operator key and to its own instance of web. The two never hold
// the lock at once, each gets it in turn, and a CAS counter written from
// both nodes loses no increment.
func TestConsulLockAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	n0, n2 := c.Nodes[0], c.Nodes[2]
	operatorKey, err := filepath.Abs(filepath.Join(c.dir, "operator_key.json"))
	if err != nil {
		t.Fatal(err)
	}
	const token = "consul-lock-token-0123456789"
	for i, n := range []*Node{n0, n2} {
		tokens := fmt.Sprintf(`{"tokens": [{"token": %q, "key": %q, "service": "web", "instance": "web-%d"}]}`, token, operatorKey, i+1)
		if err := os.WriteFile(filepath.Join(n.Home, node.TokensFile), []byte(tokens), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c.StartAll()
	tg := newTarget(t)
	for i := range 2 {
		in := types.ServiceInstance{Name: "web", Id: fmt.Sprintf("web-%d", i+1), Address: "127.0.0.1", Port: 8080 + uint32(i), Checks: []types.Check{{
			Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tg.srv.URL + "/health"},
			IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000, ConfirmMs: 1000,
		}}}
		if res, err := n0.Client.Register(ctx, c.Operator.Private, in); err != nil || res.Code != 0 {
			t.Fatalf("register %s: %+v %v", in.Id, res, err)
		}
	}
	c.WaitFor("web-1 and web-2 agreed passing (hard)", Patience, func(ctx context.Context) (bool, error) {
		insts, _, err := n0.Client.Service(ctx, "web", &api.QueryOptions{Status: []string{"passing"}})
		return err == nil && len(insts) == 2, err
	})
	clients := make([]*consulapi.Client, 2)
	for i, n := range []*Node{n0, n2} {
		if clients[i], err = consulapi.NewClient(&consulapi.Config{Address: n.HTTPAddr, Token: token}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("CAS from both datacenters loses no increment", func(t *testing.T) {
		const rounds = 4
		var wg sync.WaitGroup
		for i, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				kv := cl.KV()
				for done := 0; done < rounds; {
					p, _, err := kv.Get("consul/counter", nil)
					if err != nil {
						t.Errorf("client %d: get: %v", i, err)
						return
					}
					next := &consulapi.KVPair{Key: "consul/counter", Value: []byte("1")}
					if p != nil {
						var n int
						fmt.Sscan(string(p.Value), &n)
						next.Value, next.ModifyIndex = []byte(fmt.Sprint(n+1)), p.ModifyIndex
					}
					ok, _, err := kv.CAS(next, nil)
					if err != nil {
						t.Errorf("client %d: cas: %v", i, err)
						return
					}
					if ok {
						done++
					}
				}
			}()
		}
		wg.Wait()
		// Each CAS was answered at its commit on its own node; the other
		// node may be a block behind: wait until both read every
		// increment (a lost one never arrives).
		c.WaitFor(fmt.Sprintf("both nodes to read the counter at %d", 2*rounds), Patience, func(ctx context.Context) (bool, error) {
			for i, cl := range clients {
				p, _, err := cl.KV().Get("consul/counter", nil)
				if err != nil || p == nil || string(p.Value) != fmt.Sprint(2*rounds) {
					return false, fmt.Errorf("client %d reads %+v %v", i, p, err)
				}
			}
			return true, nil
		})
	})

	t.Run("Lock: one holder at a time, across nodes", func(t *testing.T) {
		var holders, maxHolders atomic.Int32
		took := make([]atomic.Int32, 2)
		var wg sync.WaitGroup
		for i, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l, err := cl.LockKey("consul/leader")
				if err != nil {
					t.Error(err)
					return
				}
				for range 2 {
					lost, err := l.Lock(nil)
					if err != nil {
						t.Errorf("contender %d: lock: %v", i, err)
						return
					}
					n := holders.Add(1)
					for m := maxHolders.Load(); n > m && !maxHolders.CompareAndSwap(m, n); m = maxHolders.Load() {
					}
					took[i].Add(1)
					// Hold the lock until the other datacenter's node reads
					// it held (a blocking query on the key there).
					other := clients[1-i].KV()
					wctx, cancel := context.WithTimeout(ctx, Patience)
					var idx uint64
					for {
						p, meta, err := other.Get("consul/leader", (&consulapi.QueryOptions{WaitIndex: idx}).WithContext(wctx))
						if err != nil {
							t.Errorf("contender %d: the other node never read the lock held: %v", i, err)
							break
						}
						if p != nil && p.Session != "" {
							break
						}
						idx = meta.LastIndex
					}
					cancel()
					select {
					case <-lost:
						t.Errorf("contender %d lost the lock while its instance is healthy", i)
					default:
					}
					holders.Add(-1)
					if err := l.Unlock(); err != nil {
						t.Errorf("contender %d: unlock: %v", i, err)
					}
				}
			}()
		}
		wg.Wait()
		if got := maxHolders.Load(); got != 1 {
			t.Errorf("at most %d holders at once, want 1", got)
		}
		if took[0].Load() != 2 || took[1].Load() != 2 {
			t.Errorf("turns taken: node0's contender %d, node2's %d; want 2 each", took[0].Load(), took[1].Load())
		}
	})
}
