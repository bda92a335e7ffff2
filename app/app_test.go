package app_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/store"
)

const chainID = "test-chain"

// key makes a deterministic ed25519 key from a seed name.
func key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func pub64(k ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
}

// net is a test network: an app over a memory store, four observers of
// weight 1 in two datacenters (o1, o2 in dc1; o3, o4 in dc2), an operator
// for every name and one limited to "team-".
type net struct {
	t      testing.TB
	store  *store.Store
	app    *app.App
	height int64
	now    int64
	nonce  map[string]uint64
}

var observerNames = []string{"o1", "o2", "o3", "o4"}

func genesis() *app.Genesis {
	g := &app.Genesis{}
	for i, n := range observerNames {
		dc := "dc1"
		if i >= 2 {
			dc = "dc2"
		}
		g.Observers = append(g.Observers, app.GenesisObserver{Name: n, PubKey: pub64(key(n)), Datacenter: dc, Weight: 1})
	}
	g.Operators = []app.GenesisOperator{
		{Name: "root", PubKey: pub64(key("root")), Prefixes: []string{""}},
		{Name: "team", PubKey: pub64(key("team")), Prefixes: []string{"team-"}},
	}
	g.QuietMs = app.DefaultQuietMs // as bftmon init writes it
	return g
}

func newNet(t testing.TB) *net { return newNetWith(t, genesis()) }

// newNetWith is a test network over genesis g.
func newNetWith(t testing.TB, g *app.Genesis) *net {
	t.Helper()
	st := store.NewMemory()
	a, err := app.New(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.InitChain(chainID, g); err != nil {
		t.Fatal(err)
	}
	return &net{t: t, store: st, app: a, now: 1_700_000_000_000, nonce: map[string]uint64{}}
}

// observersIn builds a genesis of weight-1 observers named dcK-N, count[k]
// of them in datacenter dcK+1, and the operator "root" for every name.
func observersIn(count ...int) *app.Genesis {
	g := &app.Genesis{Operators: []app.GenesisOperator{{Name: "root", PubKey: pub64(key("root")), Prefixes: []string{""}}}}
	for k, c := range count {
		for i := range c {
			name := fmt.Sprintf("dc%d-%d", k+1, i)
			g.Observers = append(g.Observers, app.GenesisObserver{Name: name, PubKey: pub64(key(name)), Datacenter: fmt.Sprintf("dc%d", k+1), Weight: 1})
		}
	}
	return g
}

// tx signs msg by the named key with its next nonce.
func (n *net) tx(signer string, msg types.Msg) []byte {
	n.t.Helper()
	n.nonce[signer]++
	bz, err := types.SignTx(chainID, key(signer), n.nonce[signer], msg)
	if err != nil {
		n.t.Fatal(err)
	}
	return bz
}

// block executes one block advancing time by dtMs and commits it. It
// returns the codes of the txs and the alerts.
func (n *net) block(dtMs int64, txs ...[]byte) ([]app.Code, []types.Alert) {
	n.t.Helper()
	n.height++
	n.now += dtMs
	n.app.BeginBlock(n.height, n.now)
	codes := make([]app.Code, len(txs))
	for i, tx := range txs {
		_, err := n.app.DeliverTx(tx)
		codes[i] = app.CodeOf(err)
	}
	alerts, _, err := n.app.EndBlock()
	if err != nil {
		n.t.Fatal(err)
	}
	if _, _, err := n.store.Commit(); err != nil {
		n.t.Fatal(err)
	}
	return codes, alerts
}

func register(si types.ServiceInstance) types.Msg {
	return types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: si}}}
}

func observe(obs ...types.Observation) types.Msg {
	return types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs}}}
}

func webInstance(confirmMs int64) types.ServiceInstance {
	return types.ServiceInstance{
		Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 8080, Datacenter: "dc1",
		Checks: []types.Check{{
			Id: "http", Kind: "http", Http: &types.HTTPParams{Url: "http://127.0.0.1:8080/"},
			IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000, ConfirmMs: confirmMs,
		}},
	}
}

func obsOf(st types.Status) types.Observation {
	return types.Observation{Service: "web", Instance: "web-1", Check: "http", Status: st, Output: st.Name()}
}

// reportAll has each observer report its status in one block.
func (n *net) reportAll(dtMs int64, statuses ...types.Status) []types.Alert {
	n.t.Helper()
	var txs [][]byte
	for i, st := range statuses {
		txs = append(txs, n.tx(observerNames[i], observe(obsOf(st))))
	}
	codes, alerts := n.block(dtMs, txs...)
	for i, c := range codes {
		if c != app.CodeOK {
			n.t.Fatalf("observation of %s refused: code %v", observerNames[i], c)
		}
	}
	return alerts
}

func (n *net) check() app.CheckView {
	n.t.Helper()
	r, err := n.store.Reader(0)
	if err != nil {
		n.t.Fatal(err)
	}
	q, err := app.NewQuery(r)
	if err != nil {
		n.t.Fatal(err)
	}
	iv, err := q.Service("web")
	if err != nil {
		n.t.Fatal(err)
	}
	return iv[0].Checks[0]
}

func (n *net) wantState(verdict, hard types.Status) {
	n.t.Helper()
	cv := n.check()
	if cv.State.Verdict != verdict || cv.State.Hard != hard {
		n.t.Fatalf("at height %d: verdict %s hard %s, want verdict %s hard %s",
			n.height, cv.State.Verdict.Name(), cv.State.Hard.Name(), verdict.Name(), hard.Name())
	}
}

const (
	P = types.STATUS_PASSING
	W = types.STATUS_WARNING
	C = types.STATUS_CRITICAL
	U = types.STATUS_UNKNOWN
)

func TestVerdictHardStateAndAlerts(t *testing.T) {
	n := newNet(t)
	if codes, _ := n.block(1000, n.tx("root", register(webInstance(0)))); codes[0] != app.CodeOK {
		t.Fatalf("register refused: %v", codes[0])
	}
	n.wantState(types.STATUS_STALE, types.STATUS_NONE)

	if al := n.reportAll(1000, P, P, P, P); len(al) != 0 {
		t.Fatalf("first passing raised alerts: %v", al)
	}
	n.wantState(P, P)

	// One liar cannot move the verdict.
	if al := n.reportAll(1000, C, P, P, P); len(al) != 0 {
		t.Fatalf("one critical report raised alerts: %v", al)
	}
	n.wantState(P, P)

	// Three of four see it down: critical, and one state_change alert.
	al := n.reportAll(1000, C, C, C, P)
	if len(al) != 1 || al[0].Kind != app.AlertStateChange || al[0].From != P || al[0].To != C {
		t.Fatalf("alerts = %+v, want one passing→critical state_change", al)
	}
	if len(al[0].Views) != 4 || al[0].Id == "" {
		t.Fatalf("alert lacks the observers' views or its id: %+v", al[0])
	}
	n.wantState(C, C)

	// Datacenters disagree: disputed is flagged, the hard state stays.
	al = n.reportAll(1000, P, P, C, C)
	if len(al) != 1 || al[0].Kind != app.AlertDisputed {
		t.Fatalf("alerts = %+v, want one disputed alert (confirm 0)", al)
	}
	n.wantState(types.STATUS_DISPUTED, C)

	// Nobody reports for longer than the ttl: stale, without new txs, at
	// the block after the one that passes the ttl (judged at the block
	// before, app.FreshAt).
	if _, al = n.block(3000); len(al) != 0 {
		t.Fatalf("alerts = %+v at the block that passes the ttl, want none yet", al)
	}
	_, al = n.block(1000)
	if len(al) != 1 || al[0].Kind != app.AlertStale {
		t.Fatalf("alerts = %+v, want one stale alert", al)
	}
	n.wantState(types.STATUS_STALE, C)

	// Warning: warning + critical weight reaches the quorum.
	al = n.reportAll(1000, W, C, W, P)
	if len(al) != 1 || al[0].To != W {
		t.Fatalf("alerts = %+v, want critical→warning", al)
	}
	n.wantState(W, W)
}

func TestConfirmDelaysHardState(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(2500))))
	n.reportAll(1000, P, P, P, P)
	n.wantState(P, types.STATUS_NONE)
	n.reportAll(1000, P, P, P, P)
	n.wantState(P, types.STATUS_NONE)
	n.reportAll(1000, P, P, P, P)
	n.wantState(P, types.STATUS_NONE) // held 2000ms < 2500ms
	n.reportAll(1000, P, P, P, P)
	n.wantState(P, P) // held 3000ms ≥ 2500ms
	n.reportAll(1000, C, C, C, C)
	n.wantState(C, P)
	// The confirm timer fires in empty blocks: no observation needed.
	_, al := n.block(1000)
	n.wantState(C, P)
	if len(al) != 0 {
		t.Fatalf("critical held 1s raised %+v", al)
	}
	_, al = n.block(1500)
	n.wantState(C, C)
	if len(al) != 1 || al[0].From != P || al[0].To != C {
		t.Fatalf("alerts = %+v, want passing→critical after confirm", al)
	}
}

// TestQuietBlocks: with genesis quiet_ms, a block with no transaction, no
// timer due and no write, less than quiet_ms after the last block that
// changed the state, leaves the state (the bookkeeping too) and so the app
// hash as they were; the first block quiet_ms on records again, as does any
// block with a transaction; a node restarted after quiet blocks computes the
// same hashes; and without quiet_ms every block is recorded.
func TestQuietBlocks(t *testing.T) {
	n, twin := newNet(t), newNet(t)
	si := webInstance(0)
	reg := n.tx("root", register(si))
	both := func(dt int64, txs ...[]byte) (changed bool) {
		before := n.store.Hash()
		n.run(dt, txs...)
		twin.run(dt, txs...)
		if !bytes.Equal(n.store.Hash(), twin.store.Hash()) {
			t.Fatalf("height %d: the restarted app's hash differs", n.height)
		}
		return !bytes.Equal(before, n.store.Hash())
	}
	if !both(1000, reg) {
		t.Fatal("a registration left the state as it was")
	}
	recordedAt := n.now
	steps := []struct {
		name    string
		dt      int64
		tx      bool
		changed bool
	}{
		{"empty, 300 ms on", 300, false, false},
		{"empty, 600 ms on", 300, false, false},
		{"restart between", 0, false, false},
		{"empty, 900 ms on", 300, false, false},
		{"a transaction, 950 ms on", 50, true, true},
		{"empty, 100 ms after that", 100, false, false},
		{"empty, quiet_ms after the last record", app.DefaultQuietMs - 100, false, true},
	}
	for _, st := range steps {
		if st.name == "restart between" {
			reloaded, err := app.New(twin.store)
			if err != nil {
				t.Fatal(err)
			}
			twin.app = reloaded
			continue
		}
		var txs [][]byte
		if st.tx {
			txs = append(txs, n.tx("root", register(si))) // the same instance again, under a new nonce
		}
		changed := both(st.dt, txs...)
		if changed != st.changed {
			t.Errorf("%s: changed %v, want %v", st.name, changed, st.changed)
		}
		q, err := app.NewQuery(n.reader())
		if err != nil {
			t.Fatal(err)
		}
		if changed {
			recordedAt = n.now
		}
		if info := q.Info(); info.BlockTime != recordedAt {
			t.Errorf("%s: the state says block time %d, want the last recorded block's %d", st.name, info.BlockTime, recordedAt)
		}
	}
	g := genesis()
	g.QuietMs = 0
	steady := newNetWith(t, g)
	steady.run(1000, steady.tx("root", register(si)))
	h := steady.store.Hash()
	steady.run(300)
	if bytes.Equal(h, steady.store.Hash()) {
		t.Error("without quiet_ms, an empty block left the state as it was")
	}
}
