package abci_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	abcitypes "github.com/cometbft/cometbft/abci/types"
	ics23 "github.com/cosmos/ics23/go"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/store"
)

const chainID = "abci-test"

func key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func pub64(k ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
}

var observers = []string{"o1", "o2", "o3", "o4"}

// newApp returns an initialised application over a memory store.
func newApp(t testing.TB) *abci.Application {
	t.Helper()
	a, err := abci.New(store.NewMemory(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	initChain(t, a)
	return a
}

// initChain initialises a with the test genesis.
func initChain(t testing.TB, a *abci.Application) {
	t.Helper()
	g := app.Genesis{Operators: []app.GenesisOperator{{Name: "root", PubKey: pub64(key("root")), Prefixes: []string{""}}}}
	for i, o := range observers {
		g.Observers = append(g.Observers, app.GenesisObserver{Name: o, PubKey: pub64(key(o)), Datacenter: fmt.Sprintf("dc%d", i%2+1), Weight: 1})
	}
	bz, _ := json.Marshal(g)
	if _, err := a.InitChain(context.Background(), &abcitypes.RequestInitChain{ChainId: chainID, AppStateBytes: bz}); err != nil {
		t.Fatal(err)
	}
}

var genesisTime = time.Unix(1_700_000_000, 0)

func finalize(t testing.TB, a *abci.Application, height int64, txs ...[]byte) *abcitypes.ResponseFinalizeBlock {
	t.Helper()
	res, err := a.FinalizeBlock(context.Background(), &abcitypes.RequestFinalizeBlock{
		Height: height, Time: genesisTime.Add(time.Duration(height) * time.Second), Txs: txs,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Commit(context.Background(), &abcitypes.RequestCommit{}); err != nil {
		t.Fatal(err)
	}
	return res
}

func sign(t testing.TB, signer string, nonce uint64, msg types.Msg) []byte {
	tx, err := types.SignTx(chainID, key(signer), nonce, msg)
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// instances returns n instances of service "svc" with one tcp check each.
func instances(n int) []types.ServiceInstance {
	out := make([]types.ServiceInstance, n)
	for i := range out {
		out[i] = types.ServiceInstance{Name: "svc", Id: fmt.Sprintf("i%05d", i), Checks: []types.Check{{
			Id: "tcp", Kind: "tcp", Tcp: &types.TCPParams{Address: "127.0.0.1:9"}, IntervalMs: 10000, TimeoutMs: 1000, TtlMs: 30000,
		}}}
	}
	return out
}

func registerTxs(t testing.TB, insts []types.ServiceInstance) [][]byte {
	var txs [][]byte
	for i, si := range insts {
		txs = append(txs, sign(t, "root", uint64(i+1), types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: si}}}))
	}
	return txs
}

func batch(insts []types.ServiceInstance, st types.Status, output string) types.Msg {
	obs := make([]types.Observation, len(insts))
	for i, si := range insts {
		obs[i] = types.Observation{Service: si.Name, Instance: si.Id, Check: "tcp", Status: st, Output: output, LatencyUs: 100}
	}
	return types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs}}}
}

// TestFinalizeBlockReportsCodes: every tx gets its own result code, and the
// response's app hash is the one Info reports after Commit.
func TestFinalizeBlockReportsCodes(t *testing.T) {
	a := newApp(t)
	insts := instances(2)
	finalize(t, a, 1, registerTxs(t, insts)...)
	good := sign(t, "o1", 1, batch(insts, types.STATUS_PASSING, "ok"))
	res := finalize(t, a, 2, good, good, []byte("junk"), sign(t, "root", 99, batch(insts, types.STATUS_PASSING, "")))
	want := []app.Code{app.CodeOK, app.CodeReplay, app.CodeMalformed, app.CodeUnauthorized}
	for i, w := range want {
		if got := app.Code(res.TxResults[i].Code); got != w {
			t.Errorf("tx %d: code %v (%s), want %v", i, got, res.TxResults[i].Log, w)
		}
	}
	info, _ := a.Info(context.Background(), &abcitypes.RequestInfo{})
	if info.LastBlockHeight != 2 || !bytes.Equal(info.LastBlockAppHash, res.AppHash) {
		t.Fatalf("Info = height %d hash %X, want 2 and %X", info.LastBlockHeight, info.LastBlockAppHash, res.AppHash)
	}
	ct, _ := a.CheckTx(context.Background(), &abcitypes.RequestCheckTx{Tx: good})
	if app.Code(ct.Code) != app.CodeReplay {
		t.Fatalf("CheckTx of a committed tx: code %d, want replay", ct.Code)
	}
}

// otherKinds are seeds of every other kind of message: a deregistration, a
// delivery receipt plain and acknowledged, a receiver key registration and
// removal, key/value writes (set, cas, recursive delete, txn, acquire) and
// session create, renew and destroy.
func otherKinds(t testing.TB) [][]byte {
	alert := "0123456789abcdef0123456789abcdef"
	ack := ed25519.Sign(key("rk"), types.AckBytes(chainID, alert, "pager", make([]byte, 32)))
	return [][]byte{
		sign(t, "root", 2, types.Msg{Sum: &types.Msg_Deregister{Deregister: &types.DeregisterService{Name: "svc", Id: "i00000"}}}),
		sign(t, "o1", 3, types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: alert, Receiver: "pager"}}}),
		sign(t, "o2", 3, types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: alert, Receiver: "pager", Ack: ack}}}),
		sign(t, "root", 3, types.Msg{Sum: &types.Msg_RegisterReceiver{RegisterReceiver: &types.RegisterReceiver{Name: "pager", PubKey: key("rk").Public().(ed25519.PublicKey)}}}),
		sign(t, "root", 4, types.Msg{Sum: &types.Msg_RegisterReceiver{RegisterReceiver: &types.RegisterReceiver{Name: "pager"}}}),
		sign(t, "root", 5, types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "cfg/a", Value: []byte("1"), Flags: 7}}}),
		sign(t, "root", 6, types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "cfg/a", Value: []byte("2"), Cas: true, CasIndex: 1}}}),
		sign(t, "root", 7, types.Msg{Sum: &types.Msg_KvDelete{KvDelete: &types.KVDelete{Key: "cfg/", Recurse: true}}}),
		sign(t, "root", 8, types.Msg{Sum: &types.Msg_KvTxn{KvTxn: &types.KVTxn{Ops: []types.KVOp{
			{Verb: "set", Key: "a", Value: []byte("x")}, {Verb: "check-index", Key: "a", Index: 2}, {Verb: "lock", Key: "l", Session: "s"}}}}}),
		sign(t, "root", 9, types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: &types.SessionCreate{Service: "svc", Instance: "i00000", TtlMs: 10_000}}}),
		sign(t, "root", 10, types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "lead", Acquire: "00000000-0000-8000-8000-000000000000"}}}),
		sign(t, "root", 11, types.Msg{Sum: &types.Msg_SessionRenew{SessionRenew: &types.SessionRenew{Id: "00000000-0000-8000-8000-000000000000"}}}),
		sign(t, "root", 12, types.Msg{Sum: &types.Msg_SessionDestroy{SessionDestroy: &types.SessionDestroy{Id: "00000000-0000-8000-8000-000000000000"}}}),
	}
}

// FuzzDecodeTx: the envelope decoder never panics, and what it accepts
// re-verifies.
func FuzzDecodeTx(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	good, _ := types.SignTx(chainID, key("o1"), 1, batch(instances(1), types.STATUS_PASSING, "ok"))
	f.Add(good)
	for _, tx := range otherKinds(f) {
		f.Add(tx)
	}
	f.Fuzz(func(t *testing.T, tx []byte) {
		body, err := types.DecodeTx(chainID, tx)
		if err == nil && (body.Msg == nil || len(body.Signer) != ed25519.PublicKeySize) {
			t.Fatalf("accepted a tx without a message or signer: %+v", body)
		}
	})
}

// FuzzFinalizeBlock: no block content makes FinalizeBlock fail or panic,
// and a block with only refused txs changes nothing but the bookkeeping.
func FuzzFinalizeBlock(f *testing.F) {
	insts := instances(1)
	f.Add([]byte("junk"), uint64(1), byte(0))
	f.Add(sign(f, "o1", 5, batch(insts, types.STATUS_CRITICAL, "down")), uint64(5), byte(1))
	for i, tx := range otherKinds(f) {
		f.Add(tx, uint64(6+i), byte(i+2))
	}
	f.Fuzz(func(t *testing.T, raw []byte, nonce uint64, flip byte) {
		a := newApp(t)
		finalize(t, a, 1, registerTxs(t, insts)...)
		txs := [][]byte{raw}
		if len(raw) > 0 {
			m := bytes.Clone(raw)
			m[int(flip)%len(m)] ^= flip
			txs = append(txs, m)
		}
		txs = append(txs, sign(t, "o2", nonce, batch(insts, types.Status(flip%8), string(raw))))
		res, err := a.FinalizeBlock(context.Background(), &abcitypes.RequestFinalizeBlock{Height: 2, Time: genesisTime.Add(2 * time.Second), Txs: txs})
		if err != nil {
			t.Fatalf("FinalizeBlock failed: %v", err)
		}
		if len(res.TxResults) != len(txs) {
			t.Fatalf("%d results for %d txs", len(res.TxResults), len(txs))
		}
	})
}

// finalizeOK executes and commits a block at height and fails on any tx
// it refused.
func finalizeOK(t testing.TB, a *abci.Application, height int64, txs ...[]byte) {
	t.Helper()
	for _, r := range finalize(t, a, height, txs...).TxResults {
		if r.Code != 0 {
			t.Fatalf("height %d: tx refused: %s", height, r.Log)
		}
	}
}

// registeredApp is an app with n instances of one check each registered,
// in blocks of 1,000, and the next height.
func registeredApp(b *testing.B, n int) (*abci.Application, []types.ServiceInstance, int64) {
	a := newApp(b)
	insts := instances(n)
	regs := registerTxs(b, insts)
	height := int64(1)
	for start := 0; start < len(regs); start += 1000 {
		finalizeOK(b, a, height, regs[start:min(start+1000, len(regs))]...)
		height++
	}
	return a, insts, height
}

// BenchmarkFinalizeBlock applies one block with a batch from each of four
// observers covering 10,000 checks (40,000 observations), alternating the
// reported status so that every verdict changes.
func BenchmarkFinalizeBlock(b *testing.B) {
	const checks = 10000
	a, insts, height := registeredApp(b, checks)
	nonce := uint64(0)
	blocks := make([][][]byte, b.N)
	for i := range blocks {
		st := types.STATUS_PASSING
		if i%2 == 1 {
			st = types.STATUS_CRITICAL
		}
		nonce++
		for _, o := range observers {
			// Two batches per observer: a batch holds at most app.MaxBatch.
			for s := 0; s < checks; s += app.MaxBatch {
				blocks[i] = append(blocks[i], sign(b, o, nonce, batch(insts[s:min(s+app.MaxBatch, checks)], st, st.Name())))
				nonce++
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		finalizeOK(b, a, height, blocks[i]...)
		height++
	}
	b.StopTimer()
	perObs := float64(b.Elapsed().Nanoseconds()) / float64(b.N*checks*len(observers))
	b.ReportMetric(1e9/perObs, "obs/s")
}

// TestProposalsCannotBeStuffed: ProcessProposal rejects a block holding any
// transaction that fails the proposal checks or breaking the block limits;
// PrepareProposal leaves exactly those out, so every honest proposal is
// accepted.
func TestProposalsCannotBeStuffed(t *testing.T) {
	a := newApp(t)
	insts := instances(2)
	finalize(t, a, 1, registerTxs(t, insts)...)
	good := sign(t, "o1", 10, batch(insts, types.STATUS_PASSING, "ok"))
	var env types.Envelope
	if err := env.Unmarshal(good); err != nil {
		t.Fatal(err)
	}
	forged := bytes.Clone(good)
	forged[len(forged)-1] ^= 1
	stranger, _ := types.SignTx(chainID, key("stranger"), 1, batch(insts, types.STATUS_CRITICAL, "down"))
	nonCanonical := append(bytes.Clone(sign(t, "o2", 11, batch(insts, types.STATUS_PASSING, "ok"))), 0x78, 0x01)
	oversized := make([]byte, types.MaxTxBytes+1)
	empties := make([][]byte, 200_000)
	for i := range empties {
		empties[i] = []byte{}
	}
	equivocation := [][]byte{sign(t, "o3", 100, batch(insts, types.STATUS_PASSING, "ok")), sign(t, "o3", 100, batch(insts, types.STATUS_CRITICAL, "down"))}
	big := instances(app.MaxBatch)
	var heavy [][]byte // just over the gas limit, from many signers' batches
	for i := 0; len(heavy)*(app.MaxBatch+1) <= app.MaxBlockGas; i++ {
		heavy = append(heavy, sign(t, observers[i%len(observers)], uint64(1000+i), batch(big, types.STATUS_PASSING, "")))
	}
	cases := []struct {
		name string
		txs  [][]byte
		want abcitypes.ResponseProcessProposal_ProposalStatus
		kept int // what PrepareProposal keeps of txs
	}{
		{"honest", [][]byte{good}, abcitypes.ResponseProcessProposal_ACCEPT, 1},
		{"empty block", nil, abcitypes.ResponseProcessProposal_ACCEPT, 0},
		{"junk bytes", [][]byte{good, []byte("junk")}, abcitypes.ResponseProcessProposal_REJECT, 1},
		{"an empty tx", [][]byte{{}}, abcitypes.ResponseProcessProposal_REJECT, 0},
		{"200,000 empty txs", empties, abcitypes.ResponseProcessProposal_REJECT, 0},
		{"forged signature", [][]byte{forged}, abcitypes.ResponseProcessProposal_REJECT, 0},
		{"unknown signer", [][]byte{stranger}, abcitypes.ResponseProcessProposal_REJECT, 0},
		{"non-canonical envelope", [][]byte{nonCanonical}, abcitypes.ResponseProcessProposal_REJECT, 0},
		{"oversized tx", [][]byte{oversized}, abcitypes.ResponseProcessProposal_REJECT, 0},
		{"one tx twice", [][]byte{good, good}, abcitypes.ResponseProcessProposal_REJECT, 1},
		{"one signer's nonce twice (an equivocation)", equivocation, abcitypes.ResponseProcessProposal_REJECT, 1},
		{"over the gas limit", heavy, abcitypes.ResponseProcessProposal_REJECT, len(heavy) - 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.ProcessProposal(context.Background(), &abcitypes.RequestProcessProposal{Height: 2, Txs: tc.txs})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.want {
				t.Fatalf("ProcessProposal = %v, want %v", res.Status, tc.want)
			}
			prep, err := a.PrepareProposal(context.Background(), &abcitypes.RequestPrepareProposal{Height: 2, Txs: tc.txs, MaxTxBytes: 64 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if len(prep.Txs) != tc.kept {
				t.Fatalf("PrepareProposal kept %d of %d txs, want %d", len(prep.Txs), len(tc.txs), tc.kept)
			}
			again, _ := a.ProcessProposal(context.Background(), &abcitypes.RequestProcessProposal{Height: 2, Txs: prep.Txs})
			if again.Status != abcitypes.ResponseProcessProposal_ACCEPT {
				t.Fatal("ProcessProposal rejects what PrepareProposal proposed")
			}
		})
	}
	ct, _ := a.CheckTx(context.Background(), &abcitypes.RequestCheckTx{Tx: good})
	if ct.Code != 0 || ct.GasWanted != int64(1+len(insts)) {
		t.Fatalf("CheckTx: code %d gas %d, want 0 and %d", ct.Code, ct.GasWanted, 1+len(insts))
	}
}

// FuzzProcessProposal: no block content makes ProcessProposal or
// PrepareProposal fail or panic, and what PrepareProposal keeps is accepted.
func FuzzProcessProposal(f *testing.F) {
	insts := instances(1)
	f.Add([]byte("junk"), []byte{}, uint64(1))
	f.Add(sign(f, "o1", 5, batch(insts, types.STATUS_CRITICAL, "down")), []byte{0x0a}, uint64(5))
	a := newApp(f)
	f.Fuzz(func(t *testing.T, raw, raw2 []byte, nonce uint64) {
		txs := [][]byte{raw, raw2, sign(t, "o2", nonce, batch(insts, types.STATUS_PASSING, string(raw)))}
		if _, err := a.ProcessProposal(context.Background(), &abcitypes.RequestProcessProposal{Height: 2, Txs: txs}); err != nil {
			t.Fatal(err)
		}
		prep, err := a.PrepareProposal(context.Background(), &abcitypes.RequestPrepareProposal{Height: 2, Txs: txs, MaxTxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if res, _ := a.ProcessProposal(context.Background(), &abcitypes.RequestProcessProposal{Height: 2, Txs: prep.Txs}); res.Status != abcitypes.ResponseProcessProposal_ACCEPT {
			t.Fatal("ProcessProposal rejects what PrepareProposal proposed")
		}
	})
}

// TestMempoolShare: one signer holds at most MempoolShare transactions of
// this node's mempool, so a flooding observer cannot keep the others' batches
// out; forgeries in its name count for nothing, and what a block commits or
// a recheck evicts makes room again.
func TestMempoolShare(t *testing.T) {
	a := newApp(t)
	insts := instances(1)
	finalize(t, a, 1, registerTxs(t, insts)...)
	check := func(tx []byte, typ abcitypes.CheckTxType) uint32 {
		res, err := a.CheckTx(context.Background(), &abcitypes.RequestCheckTx{Tx: tx, Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		return res.Code
	}
	var flood [][]byte
	for i := range abci.MempoolShare + 1 {
		flood = append(flood, sign(t, "o1", uint64(10+i), batch(insts, types.STATUS_PASSING, "ok")))
	}
	for i, tx := range flood[:abci.MempoolShare] {
		forged := bytes.Clone(tx)
		forged[len(forged)-1] ^= 1
		if c := check(forged, abcitypes.CheckTxType_New); c != uint32(app.CodeBadSignature) {
			t.Fatalf("forgery %d: code %d", i, c)
		}
		if c := check(tx, abcitypes.CheckTxType_New); c != 0 {
			t.Fatalf("tx %d of the share: code %d", i, c)
		}
	}
	if c := check(flood[abci.MempoolShare], abcitypes.CheckTxType_New); c != uint32(app.CodeBusy) {
		t.Fatalf("one over the share: code %d, want busy", c)
	}
	if c := check(sign(t, "o2", 10, batch(insts, types.STATUS_PASSING, "ok")), abcitypes.CheckTxType_New); c != 0 {
		t.Fatalf("another observer's batch: code %d", c)
	}
	if c := check(flood[0], abcitypes.CheckTxType_Recheck); c != 0 {
		t.Fatalf("recheck of a held tx: code %d", c)
	}
	finalize(t, a, 2, flood[:10]...)
	for _, tx := range flood[:10] { // committed: rechecks evict them as replays
		check(tx, abcitypes.CheckTxType_Recheck)
	}
	if c := check(flood[abci.MempoolShare], abcitypes.CheckTxType_New); c != 0 {
		t.Fatalf("after a block took 10 of the share: code %d", c)
	}
}

// TestQueryProve: a "/key" query with Prove answers one ics23:iavl proof
// operation that proves the value (or the absence) of the key against the
// app hash of the height read, and a query without Prove answers none.
func TestQueryProve(t *testing.T) {
	a := newApp(t)
	insts := instances(3)
	res := finalize(t, a, 1, registerTxs(t, insts)...)
	finalize(t, a, 2) // a later height: the query reads height 1
	tests := []struct {
		name    string
		key     string
		present bool
	}{
		{"present", "s/svc/i00001", true},
		{"absent", "s/svc/i00001x", false},
		{"before everything", "\x00", false},
		{"after everything", "\xff\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := a.Query(context.Background(), &abcitypes.RequestQuery{Path: "/key", Data: []byte(tt.key), Height: 1, Prove: true})
			if err != nil || q.Code != 0 {
				t.Fatalf("query: %v %d %s", err, q.GetCode(), q.GetLog())
			}
			if q.Height != 1 || tt.present != (q.Value != nil) {
				t.Fatalf("height %d, value %q", q.Height, q.Value)
			}
			ops := q.ProofOps.GetOps()
			if len(ops) != 1 || ops[0].Type != abci.ProofOpICS23 || string(ops[0].Key) != tt.key {
				t.Fatalf("proof ops %+v", ops)
			}
			var p ics23.CommitmentProof
			if err := p.Unmarshal(ops[0].Data); err != nil {
				t.Fatal(err)
			}
			ok := ics23.VerifyNonMembership(ics23.IavlSpec, res.AppHash, &p, []byte(tt.key))
			if tt.present {
				ok = ics23.VerifyMembership(ics23.IavlSpec, res.AppHash, &p, []byte(tt.key), q.Value)
			}
			if !ok {
				t.Fatal("the proof does not verify against the app hash of height 1")
			}
		})
	}
	q, err := a.Query(context.Background(), &abcitypes.RequestQuery{Path: "/key", Data: []byte("m/info")})
	if err != nil || q.ProofOps != nil {
		t.Fatalf("query without prove: %v, proof ops %v", err, q.ProofOps)
	}
}

// BenchmarkMassFlip applies one block in which every one of n checks is
// reported by all four observers: unchanged (passing again), all turning
// critical at once (a datacenter outage), or all recovering. One op is the
// timed block; the block that sets up the state before it is not timed.
// A mass flip must cost about what an unchanged block of the same size
// costs (issue 23: it grew with the square of the checks flipping).
func BenchmarkMassFlip(b *testing.B) {
	for _, n := range []int{1000, 4000, 10000} {
		for _, mode := range []string{"unchanged", "critical", "recover"} {
			b.Run(fmt.Sprintf("checks=%d/%s", n, mode), func(b *testing.B) {
				a, insts, height := registeredApp(b, n)
				nonce := uint64(0)
				block := func(st types.Status) [][]byte {
					var txs [][]byte
					for _, o := range observers {
						for s := 0; s < n; s += app.MaxBatch {
							nonce++
							txs = append(txs, sign(b, o, nonce, batch(insts[s:min(s+app.MaxBatch, n)], st, st.Name())))
						}
					}
					return txs
				}
				before, timed := types.STATUS_PASSING, types.STATUS_PASSING
				switch mode {
				case "critical":
					timed = types.STATUS_CRITICAL
				case "recover":
					before = types.STATUS_CRITICAL
				}
				run := func(txs [][]byte) {
					finalizeOK(b, a, height, txs...)
					height++
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					run(block(before))
					txs := block(timed)
					b.StartTimer()
					run(txs)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N*n*len(observers))/b.Elapsed().Seconds(), "obs/s")
			})
		}
	}
}

// BenchmarkSteadyState is the node's own cost of executing and committing a
// steady state (FinalizeBlock through Commit): 10,000 checks every 10 s from
// four observers, one block a second, each observer reporting the 1,000
// checks due in it. "unchanged" sends each as an unchanged report, as
// observers did before vouches; "vouched" sends only each check's every
// 30th report in full and vouches for the rest (checks.Config.Vouch).
// obs/s counts the reports represented, sent or vouched for.
func BenchmarkSteadyState(b *testing.B) {
	const checks, slots, refresh = 10000, 10, 30
	for _, mode := range []string{"unchanged", "vouched"} {
		b.Run(mode, func(b *testing.B) {
			a, insts, height := registeredApp(b, checks)
			nonce := map[string]uint64{}
			round := 0
			block := func(full bool) [][]byte {
				slot := round % slots
				var txs [][]byte
				for _, o := range observers {
					var obs []types.Observation
					for j := slot; j < checks; j += slots {
						ob := types.Observation{Service: "svc", Instance: insts[j].Id, Check: "tcp", Status: types.STATUS_PASSING, Output: "ok", LatencyUs: 100}
						switch {
						case full:
						case mode == "unchanged":
							ob.Unchanged, ob.Output = true, ""
						case (round/slots+j)%refresh != 0:
							continue
						}
						obs = append(obs, ob)
					}
					for s := 0; s < len(obs) || (s == 0 && mode == "vouched"); s += app.MaxBatch {
						bt := &types.ObservationBatch{Observations: obs[s:min(s+app.MaxBatch, len(obs))], PrevNonce: nonce[o]}
						if mode == "vouched" && !full && s+app.MaxBatch >= len(obs) {
							bt.UnchangedAsOfMs = genesisTime.Add(time.Duration(height) * time.Second).UnixMilli()
						}
						nonce[o]++
						txs = append(txs, sign(b, o, nonce[o], types.Msg{Sum: &types.Msg_Observe{Observe: bt}}))
					}
				}
				round++
				return txs
			}
			run := func(txs [][]byte) {
				finalizeOK(b, a, height, txs...)
				height++
			}
			for range slots {
				run(block(true))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				txs := block(false)
				b.StartTimer()
				run(txs)
			}
			b.StopTimer()
			represented := float64(b.N * len(observers) * checks / slots)
			b.ReportMetric(represented/b.Elapsed().Seconds(), "obs/s")
			b.ReportMetric(1000*b.Elapsed().Seconds()/represented, "CPU-s/1000obs")
		})
	}
}
