package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// TestReceivers: GET /v1/receivers lists the registered acknowledgement
// keys with who registered them, blocks on its own index, and a receipt
// with a valid acknowledgement shows as acknowledged under /v1/alerts.
func TestReceivers(t *testing.T) {
	n := newReadNet(t)
	ctx := context.Background()
	list, meta, err := n.c.Receivers(ctx, nil)
	if err != nil || len(list) != 0 {
		t.Fatalf("receivers before any: %+v, %v", list, err)
	}
	type result struct {
		list []api.Receiver
		meta api.QueryMeta
		err  error
	}
	done := make(chan result, 1)
	go func() {
		l, m, err := n.c.Receivers(ctx, &api.QueryOptions{WaitIndex: meta.Index, WaitTime: time.Minute})
		done <- result{l, m, err}
	}()
	waitFor(t, "the query to block", func() bool { return n.srv.Waiting() == 1 })
	pub := key("pager-ack").Public().(ed25519.PublicKey)
	res, err := n.c.RegisterReceiver(ctx, key("root"), "pager", pub)
	if err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || len(r.list) != 1 || r.meta.Index != res.Height {
		t.Fatalf("blocking list: %+v index %d, %v; want pager at index %d", r.list, r.meta.Index, r.err, res.Height)
	}
	if got := r.list[0]; got.Name != "pager" || got.PubKey != base64.StdEncoding.EncodeToString(pub) || got.KeyID != types.KeyID(pub) ||
		got.Operator != "root" || got.Height != res.Height {
		t.Fatalf("receiver %+v", got)
	}
	if _, err := n.c.RegisterReceiver(ctx, key("o1"), "pager", pub); err == nil {
		t.Fatal("an observer registered a receiver key")
	}
	if _, err := n.c.RegisterReceiver(ctx, key("root"), "pager", pub[:16]); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}

	// web-1 turns critical: an alert; o1's node delivers it, acknowledged.
	for _, o := range []string{"o1", "o2"} {
		n.send(o, types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: []types.Observation{
			{Service: "web", Instance: "web-1", Check: "p", Status: types.STATUS_CRITICAL, Output: "down"}}}}})
	}
	alerts, _, err := n.c.Alerts(ctx, &api.QueryOptions{Kind: "state_change"})
	if err != nil || len(alerts) == 0 {
		t.Fatalf("alerts %+v, %v", alerts, err)
	}
	id := alerts[0].ID
	q, err := n.b.Read()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := q.Alert(id)
	if err != nil {
		t.Fatal(err)
	}
	digest, err := types.AlertDigest(&committed)
	if err != nil {
		t.Fatal(err)
	}
	ack := ed25519.Sign(key("pager-ack"), types.AckBytes("srv-test", id, "pager", digest))
	n.send("o1", types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: id, Receiver: "pager", Ack: ack}}})
	n.send("o2", types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: id, Receiver: "am"}}})
	alerts, _, err = n.c.Alerts(ctx, &api.QueryOptions{Kind: "state_change"})
	if err != nil || len(alerts[0].Deliveries) != 2 {
		t.Fatalf("alerts %+v, %v", alerts, err)
	}
	for _, d := range alerts[0].Deliveries {
		if d.Acknowledged != (d.Receiver == "pager") {
			t.Errorf("delivery %+v: only pager's is acknowledged", d)
		}
	}
	// A bad acknowledgement is refused with its code.
	tx, err := n.c.Sign(ctx, key("o2"), types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: id, Receiver: "pager", Ack: make([]byte, 64)}}})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := n.c.BroadcastTx(ctx, tx); err != nil || res.Code != uint32(app.CodeBadAck) {
		t.Fatalf("receipt with a bad ack: %+v, %v; want code 10 (bad_ack)", res, err)
	}

	if _, err := n.c.RegisterReceiver(ctx, key("root"), "pager", nil); err != nil {
		t.Fatal(err)
	}
	if list, _, err := n.c.Receivers(ctx, nil); err != nil || len(list) != 0 {
		t.Fatalf("receivers after removal: %+v, %v", list, err)
	}
	if _, err := n.c.RegisterReceiver(ctx, key("root"), "pager", nil); err == nil {
		t.Fatal("removing it again was not refused")
	}
}
