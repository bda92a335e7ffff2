package cluster

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/notify"
	"github.com/bftmon/bftmon/verify"
)

// TestForgedBodiesNeverSettle runs a node that forges alert bodies
// (--byzantine=forge-bodies: in its turn it delivers every alert under its
// real id but with the state flipped and the record and digest made to
// match, signed with the receiver's real secret, and commits the receipt
// with whatever acknowledgement it got) in a real 4-node network, with two
// receivers whose ed25519 keys are registered:
//
//   - naive acknowledges whatever body it gets, over the body's digest;
//   - checker acknowledges only a body that notify.CheckBody and
//     notify.CheckCommitted (verified reads against the validators'
//     headers, through the forger's own API) accept, and answers 422
//     otherwise.
//
// The target flips until the forger's forged body reached a receiver for
// at least two alerts. For every alert: checker refused every forged body
// and accepted every honest one it acknowledged; the acknowledged receipt
// that settles each receiver is an honest node's (the app refused the
// forger's acknowledgement of its own body); both receivers got the honest
// body, acknowledged.
func TestForgedBodiesNeverSettle(t *testing.T) {
	if testing.Short() {
		t.Skip("a multi-process network: skipped with -short")
	}
	ctx := context.Background()
	c := New(t, 4, 2)
	keys := map[string]ed25519.PrivateKey{}
	rcvs := map[string]*receiver{}
	var settings []notify.ReceiverSettings
	for _, name := range []string{"naive", "checker"} {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[name], rcvs[name] = k, newAckReceiver(t, k)
		settings = append(settings, notify.ReceiverSettings{Name: name, URL: rcvs[name].srv.URL, Secret: receiverSecret, Kinds: []string{"state_change"}})
	}
	c.SetNotify(notify.Settings{HandoffDelay: "3s", RetryBase: "200ms", RetryMax: "1s", Receivers: settings})
	forger := c.Nodes[3]
	for _, n := range c.Nodes[:3] {
		n.Start()
	}
	forger.Start("--byzantine=forge-bodies")
	c.WaitHeight(1)
	n0 := c.Nodes[0]

	for name, k := range keys {
		if _, err := n0.Client.RegisterReceiver(ctx, c.Operator.Private, name, k.Public().(ed25519.PublicKey)); err != nil {
			t.Fatalf("register receiver %s: %v", name, err)
		}
	}
	tg := newTarget(t)
	web := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Checks: []types.Check{{
		Id: "http", Kind: "http", Http: &types.HTTPParams{Url: tg.srv.URL + "/health"},
		IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000,
	}}}
	if res, err := n0.Client.Register(ctx, c.Operator.Private, web); err != nil || res.Code != 0 {
		t.Fatalf("register: %+v %v", res, err)
	}
	waitCheck(c, n0, "passing", "passing")

	gen, err := cmttypes.GenesisDocFromFile(filepath.Join(n0.Home, "config", "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithTimeout(ctx, Patience)
	headers, err := verify.NewHeaders(hctx, verify.Options{RPC: []string{"http://" + forger.RPCAddr, "http://" + n0.RPCAddr}, Genesis: gen})
	cancel()
	if err != nil {
		t.Fatalf("light client: %v", err)
	}
	// The checker reads through the forger's API: verification, not the
	// node it asks, is what it trusts.
	reader := verify.NewClient(forger.HTTPAddr, headers)
	check := func(ctx context.Context, body []byte) error {
		al, _, err := notify.CheckBody(body)
		if err != nil {
			return err
		}
		return notify.CheckCommitted(ctx, reader, &al)
	}
	rcvs["checker"].check.Store(&check)

	forgedAlerts, refused, naiveForged := 0, 0, 0
	var why error // one of the checker's reasons
	// The forger delivers only when its turn comes before an honest node
	// settled the alert, so how often it gets to forge depends on how fast
	// blocks come: up to 60 alerts.
	for i := 0; i < 6 || forgedAlerts < 2; i++ {
		if i == 60 {
			t.Fatalf("in 60 alerts the forger's body reached a receiver for %d, want 2", forgedAlerts)
		}
		al := flipRound(c, n0, tg, rcvs, forger.Name)
		// Every receiver ends with the honest body, acknowledged, and its
		// acknowledged receipts are honest nodes'.
		c.WaitFor("an acknowledged honest copy of "+al.ID+" at both receivers", Patience, func(context.Context) (bool, error) {
			for name, rc := range rcvs {
				if !slices.ContainsFunc(rc.delivered(al.ID), func(a arrival) bool { return a.node != forger.Name && a.acked }) {
					return false, fmt.Errorf("%s: no acknowledged honest copy in %+v", name, rc.attempts(al.ID))
				}
			}
			return true, nil
		})
		forgedHere := false
		for name, rc := range rcvs {
			acked := 0
			for _, d := range al.Deliveries {
				if d.Receiver == name && d.Acknowledged {
					acked++
					if d.Name == forger.Name {
						t.Errorf("%s: the forger's acknowledged receipt for %s was committed: %+v", al.ID, name, d)
					}
				}
			}
			// More than one honest node may have delivered (a slow
			// receiver lets the next node's turn come); none is the
			// forger's, and at least one is there.
			if acked == 0 {
				t.Errorf("%s: no acknowledged receipt for %s: %+v", al.ID, name, al.Deliveries)
			}
			var honest string
			for _, a := range rc.attempts(al.ID) {
				if a.node != forger.Name && a.status == 200 {
					honest = a.digest
				}
			}
			for _, a := range rc.attempts(al.ID) {
				switch {
				case a.node == forger.Name:
					forgedHere = true
					if a.digest == honest {
						t.Errorf("%s: the forger sent %s the honest digest: it did not forge", al.ID, name)
					}
					if name == "checker" {
						if a.checkErr == nil || a.acked {
							t.Errorf("%s: checker accepted the forged body (acked %v)", al.ID, a.acked)
						} else {
							refused++
							why = a.checkErr
						}
					} else if a.acked {
						naiveForged++
					}
				case a.status == 200 && a.digest != honest:
					t.Errorf("%s: honest nodes sent %s two digests (%s, %s)", al.ID, name, a.digest, honest)
				case a.checkErr != nil && name == "checker" && a.status != 422:
					t.Errorf("%s: %+v", al.ID, a)
				}
			}
		}
		if forgedHere {
			forgedAlerts++
		}
		t.Logf("alert %d %s: forged copies %v; receipts %s", i+1, al.ID, forgedHere, receiptsText(al.Deliveries))
	}
	t.Logf("%d alerts had a forged body; checker refused %d forged bodies (one reason: %v); naive acknowledged %d forged bodies, none of whose receipts was committed",
		forgedAlerts, refused, why, naiveForged)
	if refused == 0 {
		t.Error("the checker never saw a forged body: the test did not test the check")
	}
	c.CheckInvariants(ctx)
}

// receiptsText is the receipts of an alert, for logs.
func receiptsText(ds []api.Delivery) string {
	var out []string
	for _, d := range ds {
		s := d.Receiver + " by " + d.Name
		if d.Acknowledged {
			s += " (acknowledged)"
		}
		out = append(out, s)
	}
	return "[" + strings.Join(out, ", ") + "]"
}
