package app_test

import (
	"bytes"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// scriptedBlock is one block of a generated history: its time step and its
// transactions, already signed (so every app sees identical bytes).
type scriptedBlock struct {
	dt  int64
	txs [][]byte
}

// receiptsOfCommitted counts the generated receipts that name a committed
// alert, and ackedReceipts the acknowledged receipts the histories
// committed, so TestDeterminism knows the histories exercised them.
var receiptsOfCommitted, ackedReceipts int

// kvAndSessions counts the generated blocks that changed both key/value
// entries and sessions.
var kvAndSessions int

// genHistory draws a random history: registrations (with random confirm and
// scope), deregistrations, observation batches with random statuses (some
// blocks with every observer agreeing), and
// delivery receipts (of alerts committed earlier in the history, repeated,
// or of unknown ones; with no acknowledgement, the receiver's, or one by
// another key), and receivers' key registrations and removals (in and out
// of the signer's scope). It runs each block on n as it goes, to learn the
// alert ids the receipts name. Key/value writes (set, cas, delete, txn; in
// and out of the signer's scope), sessions of the instances (created,
// renewed, destroyed, ended by a critical hard status or deregistration)
// and their locks are drawn too.
func genHistory(t *rapid.T, n *net) []scriptedBlock {
	// The receivers' keys start registered, so that acknowledged receipts
	// can commit; the history then replaces and removes them at random.
	first := scriptedBlock{txs: [][]byte{
		n.tx("root", registerReceiver("pager", pubOf("rk-pager"))),
		n.tx("team", registerReceiver("team-pager", pubOf("rk-team-pager"))),
	}}
	runBlock(n.t, n, first)
	blocks := []scriptedBlock{first}
	instances := []string{"web-1", "web-2", "web-3"}
	alertIDs := []string{"00000000000000000000000000000000"}
	digests := map[string][]byte{} // alert id → digest of the committed alert
	sessions := []string{"no-such-session"}
	kvKeys := []string{"cfg/a", "cfg/b", "lead", "services/web/leader", "team-x/k"}
	for h := rapid.IntRange(1, 40).Draw(t, "blocks"); h > 0; h-- {
		b := scriptedBlock{dt: rapid.Int64Range(0, 4000).Draw(t, "dt")}
		for k := rapid.IntRange(0, 5).Draw(t, "txs"); k > 0; k-- {
			id := rapid.SampledFrom(instances).Draw(t, "instance")
			switch rapid.IntRange(0, 15).Draw(t, "kind") {
			case 15:
				// An instance, a session of it and a lock it takes, in one
				// block: key/value and sessions change together.
				si := webInstance(rapid.Int64Range(0, 5000).Draw(t, "confirm"))
				si.Id = id
				tx := n.tx("root", types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: &types.SessionCreate{Service: "web", Instance: id}}})
				sessions = append(sessions, app.SessionID(tx))
				b.txs = append(b.txs, n.tx("root", register(si)), tx,
					n.tx("root", kvAcquire(rapid.SampledFrom(kvKeys).Draw(t, "lock key"), "me", app.SessionID(tx))))
			case 11:
				k := rapid.SampledFrom(kvKeys).Draw(t, "kv key")
				signer := rapid.SampledFrom([]string{"root", "team"}).Draw(t, "operator")
				var m types.Msg
				switch rapid.IntRange(0, 3).Draw(t, "kv write") {
				case 0:
					m = kvSet(k, rapid.String().Draw(t, "value"))
				case 1:
					m = kvCAS(k, "cas", rapid.Uint64Range(0, uint64(n.height)).Draw(t, "cas index"))
				case 2:
					m = kvDelete(k, rapid.Bool().Draw(t, "recurse"))
				default:
					m = kvTxn(types.KVOp{Verb: "set", Key: k, Value: []byte("t")},
						types.KVOp{Verb: "check-index", Key: rapid.SampledFrom(kvKeys).Draw(t, "checked"), Index: rapid.Uint64Range(0, uint64(n.height)).Draw(t, "index")})
				}
				b.txs = append(b.txs, n.tx(signer, m))
			case 12:
				tx := n.tx("root", types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: &types.SessionCreate{
					Service: "web", Instance: id, TtlMs: rapid.SampledFrom([]int64{0, 10_000}).Draw(t, "ttl"),
					Behavior: rapid.SampledFrom([]string{"release", "delete"}).Draw(t, "behavior"), LockDelayMs: rapid.Int64Range(0, 5000).Draw(t, "lock delay")}}})
				sessions = append(sessions, app.SessionID(tx))
				b.txs = append(b.txs, tx)
			case 13:
				k := rapid.SampledFrom(kvKeys).Draw(t, "lock key")
				s := rapid.SampledFrom(sessions).Draw(t, "session")
				if rapid.IntRange(0, 2).Draw(t, "release") == 0 {
					b.txs = append(b.txs, n.tx("root", kvRelease(k, s)))
				} else {
					b.txs = append(b.txs, n.tx("root", kvAcquire(k, "me", s)))
				}
			case 14:
				s := rapid.SampledFrom(sessions).Draw(t, "session")
				if rapid.Bool().Draw(t, "destroy") {
					b.txs = append(b.txs, n.tx("root", sessionDestroy(s)))
				} else {
					b.txs = append(b.txs, n.tx("root", sessionRenew(s)))
				}
			case 0:
				si := webInstance(rapid.Int64Range(0, 5000).Draw(t, "confirm"))
				si.Id = id
				if rapid.Bool().Draw(t, "scoped") {
					si.Checks[0].Datacenters = []string{"dc2"}
				}
				b.txs = append(b.txs, n.tx("root", register(si)))
			case 1:
				b.txs = append(b.txs, n.tx("root", types.Msg{Sum: &types.Msg_Deregister{Deregister: &types.DeregisterService{Name: "web", Id: id}}}))
			case 2:
				al := alertIDs[0]
				if len(alertIDs) > 1 && rapid.IntRange(0, 3).Draw(t, "of a committed alert") > 0 {
					al = rapid.SampledFrom(alertIDs[1:]).Draw(t, "alert")
				}
				if al != alertIDs[0] {
					receiptsOfCommitted++
				}
				rcv := rapid.SampledFrom([]string{"pager", "am", "team-pager"}).Draw(t, "receiver")
				signer := rapid.SampledFrom(observerNames).Draw(t, "observer")
				var ack []byte
				switch rapid.IntRange(0, 3).Draw(t, "ack") {
				case 1, 2:
					ack = ackBy("rk-"+rcv, al, rcv, digests[al])
				case 3:
					ack = ackBy("rk-other", al, rcv, digests[al])
				}
				b.txs = append(b.txs, n.tx(signer, ackedReceipt(al, rcv, ack)))
			case 3:
				rcv := rapid.SampledFrom([]string{"pager", "am", "team-pager"}).Draw(t, "receiver")
				var pub []byte
				if rapid.IntRange(0, 3).Draw(t, "remove") > 0 {
					pub = pubOf(rapid.SampledFrom([]string{"rk-" + rcv, "rk-other"}).Draw(t, "receiver key"))
				}
				signer := rapid.SampledFrom([]string{"root", "team"}).Draw(t, "operator")
				b.txs = append(b.txs, n.tx(signer, registerReceiver(rcv, pub)))
			case 4:
				// Every observer reports the same: verdicts move, alerts commit.
				o := obsOf(types.Status(rapid.IntRange(1, 4).Draw(t, "agreed status")))
				o.Instance = id
				for _, signer := range observerNames {
					b.txs = append(b.txs, n.tx(signer, observe(o)))
				}
			default:
				o := obsOf(types.Status(rapid.IntRange(1, 4).Draw(t, "status")))
				o.Instance = id
				o.Unchanged = rapid.Bool().Draw(t, "unchanged")
				signer := rapid.SampledFrom(observerNames).Draw(t, "observer")
				b.txs = append(b.txs, n.tx(signer, observe(o)))
			}
		}
		_, alerts := runBlock(n.t, n, b)
		for _, al := range alerts {
			alertIDs = append(alertIDs, al.Id)
			digests[al.Id] = digestOf(t, al)
		}
		if c := n.app.Changed(); len(c.KVKeys) > 0 && c.Sessions {
			kvAndSessions++
		}
		for _, d := range n.app.Deliveries() {
			if d.Acknowledged {
				ackedReceipts++
			}
		}
		blocks = append(blocks, b)
	}
	return blocks
}

// TestDeterminism feeds the same blocks to two fresh apps, and to a third
// that is reloaded from its store (a restart) at random heights: all three
// must agree on the app hash and the alerts at every height.
func TestDeterminism(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		gen := newNet(t)
		history := genHistory(rt, gen)
		a, b, c := newNet(t), newNet(t), newNet(t)
		restarts := map[int]bool{}
		for i := range history {
			restarts[i] = rapid.IntRange(0, 4).Draw(rt, fmt.Sprintf("restart%d", i)) == 0
		}
		for i, blk := range history {
			ha, aa := runBlock(t, a, blk)
			hb, ab := runBlock(t, b, blk)
			if restarts[i] {
				reloaded, err := app.New(c.store)
				if err != nil {
					t.Fatal(err)
				}
				c.app = reloaded
			}
			hc, ac := runBlock(t, c, blk)
			if !bytes.Equal(ha, hb) || !bytes.Equal(ha, hc) {
				rt.Fatalf("height %d: app hashes differ: %X %X %X", i+1, ha, hb, hc)
			}
			if fmt.Sprint(aa) != fmt.Sprint(ab) || fmt.Sprint(aa) != fmt.Sprint(ac) {
				rt.Fatalf("height %d: alerts differ:\n%v\n%v\n%v", i+1, aa, ab, ac)
			}
		}
	})
	if testing.Short() {
		return // the 20 histories of -short need not reach every path
	}
	if receiptsOfCommitted == 0 {
		t.Error("no generated history had a receipt of a committed alert")
	}
	if kvAndSessions == 0 {
		t.Error("no generated block changed both key/value entries and sessions")
	}
	if ackedReceipts == 0 {
		t.Error("no generated history committed an acknowledged receipt")
	}
}

func runBlock(t testing.TB, n *net, blk scriptedBlock) ([]byte, []types.Alert) {
	n.height++
	n.now += blk.dt
	n.app.BeginBlock(n.height, n.now)
	for _, tx := range blk.txs {
		if _, err := n.app.DeliverTx(tx); app.CodeOf(err) == app.CodeInternal {
			t.Fatal(err)
		}
	}
	alerts, hash, err := n.app.EndBlock()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := n.store.Commit(); err != nil {
		t.Fatal(err)
	}
	return hash, alerts
}
