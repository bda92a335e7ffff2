package app_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// FuzzKVTxn: no txn content makes DeliverTx panic or fail internally, and a
// refused txn changes nothing but the signer's nonce.
func FuzzKVTxn(f *testing.F) {
	for _, m := range []*types.KVTxn{
		{Ops: []types.KVOp{{Verb: "set", Key: "a", Value: []byte("1")}, {Verb: "cas", Key: "a", Index: 2}}},
		{Ops: []types.KVOp{{Verb: "lock", Key: "lead", Session: "s"}, {Verb: "unlock", Key: "lead", Session: "s"}}},
		{Ops: []types.KVOp{{Verb: "delete-tree", Key: ""}, {Verb: "check-not-exists", Key: "a"}, {Verb: "get-tree", Key: "a/"}}},
		{Ops: []types.KVOp{{Verb: "delete-cas", Key: "x", Index: 1}, {Verb: "check-session", Key: "lead", Session: "s"}, {Verb: "get", Key: "\xff"}}},
	} {
		bz, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bz, false)
	}
	f.Fuzz(func(t *testing.T, bz []byte, scoped bool) {
		var m types.KVTxn
		if m.Unmarshal(bz) != nil {
			return
		}
		n := newNet(t)
		n.must(1000, "root", register(webInstance(0)))
		s := n.newSession(1000, &types.SessionCreate{Service: "web", Instance: "web-1"})
		n.must(1000, "root", kvSet("a", "1"), kvAcquire("lead", "", s))
		signer := "root"
		if scoped {
			signer = "team"
		}
		tx := n.tx(signer, types.Msg{Sum: &types.Msg_KvTxn{KvTxn: &m}})
		n.app.BeginBlock(n.height+1, n.now+1000)
		before := dump(t, n)
		_, err := n.app.DeliverTx(tx)
		switch {
		case app.CodeOf(err) == app.CodeInternal:
			t.Fatalf("internal failure: %v", err)
		case err != nil:
			if changed := diff(before, dump(t, n)); len(changed) != 1 || !strings.HasPrefix(changed[0], "n/") {
				t.Fatalf("refused txn (%v) changed %q", err, changed)
			}
		}
		if _, _, err := n.app.EndBlock(); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkKVSet executes blocks of 1,000 signed KV sets of 100-byte
// values over 10,000 keys (signatures verified, as in FinalizeBlock) and
// reports committed puts per second of one core.
func BenchmarkKVSet(b *testing.B) {
	n := newNet(b)
	const perBlock = 1000
	value := strings.Repeat("v", 100)
	blocks := make([][][]byte, b.N)
	for i := range blocks {
		for j := range perBlock {
			blocks[i] = append(blocks[i], n.tx("root", kvSet(fmt.Sprintf("bench/%05d", (i*perBlock+j)%10000), value)))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range blocks {
		for _, err := range n.run(1000, blocks[i]...) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*perBlock)/b.Elapsed().Seconds(), "puts/s")
}
