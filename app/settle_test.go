package app_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

func registerReceiver(name string, pub []byte) types.Msg {
	return types.Msg{Sum: &types.Msg_RegisterReceiver{RegisterReceiver: &types.RegisterReceiver{Name: name, PubKey: pub}}}
}

func ackedReceipt(alertID, receiver string, ack []byte) types.Msg {
	return types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: alertID, Receiver: receiver, Ack: ack}}}
}

// ackBy is the receiver acknowledgement of alertID to receiver signed by
// the named key.
func ackBy(signer, alertID, receiver string, digest []byte) []byte {
	return ed25519.Sign(key(signer), types.AckBytes(chainID, alertID, receiver, digest))
}

// digestOf is the digest of a committed alert, what an acknowledgement of
// its body signs.
func digestOf(t interface{ Fatalf(string, ...any) }, al types.Alert) []byte {
	d, err := types.AlertDigest(&al)
	if err != nil {
		t.Fatalf("digest of alert %s: %v", al.Id, err)
	}
	return d
}

func pubOf(name string) []byte { return key(name).Public().(ed25519.PublicKey) }

// TestSettled: the settle rule of delivery mode one. Observers weigh 1, 2,
// 3 and 3 (9 in all, a third is 3): receipts settle an alert for a
// receiver only above a third of all the weight, or when one carries the
// receiver's acknowledgement; a suspect observer's receipt still counts;
// an acknowledgement that does not verify, or of a receiver with no
// registered key, is refused and settles nothing.
func TestSettled(t *testing.T) {
	g := genesis()
	for i, w := range []uint64{1, 2, 3, 3} {
		g.Observers[i].Weight = w
	}
	n := newNetWith(t, g)
	n.block(1000, n.tx("root", register(webInstance(0))))
	// o1 disagrees until it is suspect; the others decide (quorum 7 of 9).
	for range app.SuspectMinReports {
		n.reportAll(1000, C, P, P, P)
	}
	if !n.standings()["o1"].Suspect {
		t.Fatal("o1 did not become suspect")
	}
	al := n.reportAll(1000, C, C, C, C)
	if len(al) != 1 || al[0].Kind != app.AlertStateChange {
		t.Fatalf("alerts %+v, want one state change", al)
	}
	id := al[0].Id
	dig := digestOf(t, al[0])
	// A body a faulty node forged under the alert's id: the receiver's own
	// acknowledgement of it covers the forged body's digest.
	forged := al[0]
	forged.To = types.STATUS_PASSING
	forgedDig := digestOf(t, forged)
	for _, r := range []string{"acked", "bad-ack", "other-alert", "short-ack", "removed", "forged"} {
		if codes, _ := n.block(100, n.tx("root", registerReceiver(r, pubOf("rk-"+r)))); codes[0] != app.CodeOK {
			t.Fatalf("register receiver %s: code %v", r, codes[0])
		}
	}
	n.block(100, n.tx("root", registerReceiver("removed", nil)))

	type rc struct {
		signer string
		ack    []byte
		code   app.Code
	}
	other := strings.Repeat("0", 32)
	for _, tc := range []struct {
		name, receiver string
		receipts       []rc
		weight         uint64
		ack, settled   bool
	}{
		{"no receipt", "none", nil, 0, false, false},
		{"below a third", "below", []rc{{"o2", nil, app.CodeOK}}, 2, false, false},
		{"at a third, two observers", "at2", []rc{{"o1", nil, app.CodeOK}, {"o2", nil, app.CodeOK}}, 3, false, false},
		{"at a third, one observer", "at1", []rc{{"o3", nil, app.CodeOK}}, 3, false, false},
		{"above a third", "above", []rc{{"o2", nil, app.CodeOK}, {"o3", nil, app.CodeOK}}, 5, false, true},
		{"a repeat counts once", "repeat", []rc{{"o3", nil, app.CodeOK}, {"o3", nil, app.CodeOK}}, 3, false, false},
		{"a suspect observer's receipt still counts", "suspect", []rc{{"o1", nil, app.CodeOK}, {"o4", nil, app.CodeOK}}, 4, false, true},
		{"one acknowledged receipt settles", "acked", []rc{{"o1", ackBy("rk-acked", id, "acked", dig), app.CodeOK}}, 1, true, true},
		{"an ack by another key is refused", "bad-ack", []rc{{"o2", ackBy("someone", id, "bad-ack", dig), app.CodeBadAck}}, 0, false, false},
		{"an ack of another alert is refused", "other-alert", []rc{{"o2", ackBy("rk-other-alert", other, "other-alert", dig), app.CodeBadAck}}, 0, false, false},
		{"an ack for another receiver is refused", "bad-ack", []rc{{"o2", ackBy("rk-acked", id, "acked", dig), app.CodeBadAck}}, 0, false, false},
		{"an unregistered receiver's ack is refused", "nokey", []rc{{"o2", ackBy("rk-nokey", id, "nokey", dig), app.CodeBadAck}}, 0, false, false},
		{"a removed receiver's ack is refused", "removed", []rc{{"o2", ackBy("rk-removed", id, "removed", dig), app.CodeBadAck}}, 0, false, false},
		{"an ack of a forged body is refused", "forged", []rc{{"o2", ackBy("rk-forged", id, "forged", forgedDig), app.CodeBadAck}}, 0, false, false},
		{"an ack that is no signature is invalid", "short-ack", []rc{{"o2", []byte("ok"), app.CodeInvalid}}, 0, false, false},
		{"a refused ack leaves the plain receipts", "other-alert", []rc{{"o3", nil, app.CodeOK}, {"o4", ackBy("rk-other-alert", other, "other-alert", dig), app.CodeBadAck}}, 3, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range tc.receipts {
				tx := n.tx(r.signer, ackedReceipt(id, tc.receiver, r.ack))
				if r.code == app.CodeInvalid {
					if _, err := n.app.CheckTx(tx); app.CodeOf(err) != r.code {
						t.Errorf("CheckTx of %s's receipt: code %v (%v), want %v", r.signer, app.CodeOf(err), err, r.code)
					}
				}
				before := dump(t, n)
				n.height++
				n.now += 100
				n.app.BeginBlock(n.height, n.now)
				_, err := n.app.DeliverTx(tx)
				if app.CodeOf(err) != r.code {
					t.Fatalf("receipt by %s: code %v (%v), want %v", r.signer, app.CodeOf(err), err, r.code)
				}
				if tc.receiver == "forged" && !strings.Contains(fmt.Sprint(err), "covers another body") {
					t.Fatalf("ack of a forged body: message %q does not say it covers another body", err)
				}
				if r.code == app.CodeBadAck && (!strings.Contains(err.Error(), tc.receiver) || !onlyNonces(diff(before, dump(t, n)))) {
					t.Fatalf("refused ack: message %q does not name the receiver, or the state changed beyond the signer's nonce", err)
				}
				if _, _, err := n.app.EndBlock(); err != nil {
					t.Fatal(err)
				}
				if _, _, err := n.store.Commit(); err != nil {
					t.Fatal(err)
				}
			}
			s, err := n.query().Settled(id, tc.receiver)
			if err != nil {
				t.Fatal(err)
			}
			want := app.Settlement{Weight: tc.weight, Total: 9, Acknowledged: tc.ack, Settled: tc.settled}
			if s != want {
				t.Fatalf("Settled(%s) = %+v, want %+v", tc.receiver, s, want)
			}
		})
	}
	ds, err := n.query().Deliveries(id)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Acknowledged != (d.Receiver == "acked") {
			t.Errorf("delivery %+v: acknowledged only the acked receiver's", d)
		}
	}
}

// TestSettledEqualWeights: with the testnet's four observers of weight 1,
// one receipt settles nothing and two do (3·2 > 4).
func TestSettledEqualWeights(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0))))
	n.reportAll(1000, P, P, P, P)
	id := n.reportAll(1000, C, C, C, C)[0].Id
	for i, want := range []app.Settlement{{Weight: 1, Total: 4}, {Weight: 2, Total: 4, Settled: true}, {Weight: 3, Total: 4, Settled: true}} {
		if codes, _ := n.block(100, n.tx(observerNames[i], receipt(id, "pager"))); codes[0] != app.CodeOK {
			t.Fatalf("receipt %d: code %v", i, codes[0])
		}
		if s, err := n.query().Settled(id, "pager"); err != nil || s != want {
			t.Fatalf("after %d receipts: Settled = %+v, %v; want %+v", i+1, s, err, want)
		}
	}
	if s, _ := n.query().Settled(id, "am"); s.Settled || s.Weight != 0 {
		t.Fatalf("another receiver's receipts settled am: %+v", s)
	}
}

// TestReceiverRegistration: an operator registers, replaces and removes a
// receiver's acknowledgement key within its scope; bad keys and names are
// refused with their codes and change nothing.
func TestReceiverRegistration(t *testing.T) {
	n := newNet(t)
	for _, tc := range []struct {
		name, signer, receiver string
		pub                    []byte
		code                   app.Code
		log                    string
	}{
		{"root registers pager", "root", "pager", pubOf("k1"), app.CodeOK, "registered"},
		{"team may not register outside team-", "team", "pager", pubOf("k2"), app.CodeUnauthorized, `"team-"*`},
		{"team registers team-pager", "team", "team-pager", pubOf("k3"), app.CodeOK, "registered"},
		{"an observer is no operator", "o1", "team-x", pubOf("k4"), app.CodeUnauthorized, "not an operator"},
		{"a key of 31 bytes", "root", "pager", pubOf("k5")[:31], app.CodeInvalid, "31 bytes"},
		{"a key of 33 bytes", "root", "pager", append(pubOf("k5"), 0), app.CodeInvalid, "33 bytes"},
		{"a bad name", "root", "Pager", pubOf("k5"), app.CodeInvalid, "receiver name"},
		{"an empty name", "root", "", pubOf("k5"), app.CodeInvalid, "receiver name"},
		{"root replaces pager's key", "root", "pager", pubOf("k6"), app.CodeOK, "replaced"},
		{"team may not remove pager", "team", "pager", nil, app.CodeUnauthorized, `"team-"*`},
		{"removing an unknown receiver", "root", "nope", nil, app.CodeNotFound, "no key is registered"},
		{"root removes pager", "root", "pager", nil, app.CodeOK, "removed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tx := n.tx(tc.signer, registerReceiver(tc.receiver, tc.pub))
			if tc.code == app.CodeUnauthorized || tc.code == app.CodeInvalid {
				if _, err := n.app.CheckTx(tx); app.CodeOf(err) != tc.code {
					t.Errorf("CheckTx code %v (%v), want %v", app.CodeOf(err), err, tc.code)
				}
			}
			n.height++
			n.now += 100
			n.app.BeginBlock(n.height, n.now)
			before := dump(t, n)
			log, err := n.app.DeliverTx(tx)
			if app.CodeOf(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", app.CodeOf(err), err, tc.code)
			}
			if msg := fmt.Sprint(log, err); !strings.Contains(msg, tc.log) {
				t.Errorf("%q does not say %q", msg, tc.log)
			}
			if changed := diff(before, dump(t, n)); err != nil && !onlyNonces(changed) {
				t.Errorf("a refused registration changed %q, more than its signer's nonce", changed)
			}
			if changed := n.app.Changed().Receivers; changed != (err == nil) {
				t.Errorf("Changed().Receivers = %v after code %v", changed, app.CodeOf(err))
			}
			if _, _, err := n.app.EndBlock(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := n.store.Commit(); err != nil {
				t.Fatal(err)
			}
		})
	}
	q := n.query()
	if _, err := q.Receiver("pager"); !errors.Is(err, app.ErrNotFound) {
		t.Errorf("Receiver(pager) after removal: %v, want not found", err)
	}
	rec, err := q.Receiver("team-pager")
	if err != nil || !bytes.Equal(rec.PubKey, pubOf("k3")) || !bytes.Equal(rec.Operator, pubOf("team")) || rec.Height == 0 {
		t.Errorf("Receiver(team-pager) = %+v, %v", rec, err)
	}
	list, err := q.Receivers()
	if err != nil || len(list) != 1 || list[0].Name != "team-pager" {
		t.Errorf("Receivers() = %+v, %v; want team-pager alone", list, err)
	}
	if q.Indexes().Receivers == 0 {
		t.Error("the receivers index did not move")
	}
}

// TestReceiverLimit: the MaxReceivers limit on receipts per alert is per
// observer: one that fills it keeps no other observer's receipts out.
func TestReceiverLimit(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0))))
	n.reportAll(1000, P, P, P, P)
	id := n.reportAll(1000, C, C, C, C)[0].Id
	name := func(i int) string { return fmt.Sprintf("r%02d", i) }
	var fill [][]byte
	for i := range app.MaxReceivers {
		fill = append(fill, n.tx("o1", receipt(id, name(i))))
	}
	codes, _ := n.block(100, fill...)
	for i, c := range codes {
		if c != app.CodeOK {
			t.Fatalf("o1's receipt %d: code %v", i, c)
		}
	}
	for _, tc := range []struct {
		name, signer, receiver string
		want                   app.Code
	}{
		{"o1's next receiver is refused", "o1", "one-more", app.CodeTooLarge},
		{"o1's repeat is still a no-op", "o1", name(3), app.CodeOK},
		{"o2's receipt for a receiver o1 filled", "o2", name(0), app.CodeOK},
		{"o2's receipt for a receiver o1 never named", "o2", "one-more", app.CodeOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if codes, _ := n.block(100, n.tx(tc.signer, receipt(id, tc.receiver))); codes[0] != tc.want {
				t.Fatalf("code %v, want %v", codes[0], tc.want)
			}
		})
	}
	var more [][]byte
	for i := range app.MaxReceivers {
		more = append(more, n.tx("o2", receipt(id, "o2-"+name(i))))
	}
	codes, _ = n.block(100, more...)
	for i, c := range codes {
		// o2 has two receivers already: its 31st and 32nd new ones are over.
		want := app.CodeOK
		if i >= app.MaxReceivers-2 {
			want = app.CodeTooLarge
		}
		if c != want {
			t.Errorf("o2's receipt %d: code %v, want %v", i, c, want)
		}
	}
}
