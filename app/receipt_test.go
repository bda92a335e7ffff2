package app_test

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

func receipt(alertID, receiver string) types.Msg {
	return types.Msg{Sum: &types.Msg_Receipt{Receipt: &types.DeliveryReceipt{AlertId: alertID, Receiver: receiver}}}
}

func (n *net) query() *app.Query {
	n.t.Helper()
	r, err := n.store.Reader(0)
	if err != nil {
		n.t.Fatal(err)
	}
	q, err := app.NewQuery(r)
	if err != nil {
		n.t.Fatal(err)
	}
	return q
}

// TestDeliveryReceipts: observers' nodes commit receipts of committed
// alerts; the first per alert, receiver and observer is kept with its
// height, a repeat changes nothing, and bad receipts are refused with
// their codes, changing nothing.
func TestDeliveryReceipts(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0))))
	n.reportAll(1000, P, P, P, P)
	al := n.reportAll(1000, C, C, C, C)
	if len(al) != 1 {
		t.Fatalf("alerts %+v, want one", al)
	}
	id := al[0].Id
	if got, err := n.query().Alert(id); err != nil || got.Id != id || got.To != C {
		t.Fatalf("Alert(%s) = %+v, %v", id, got, err)
	}
	if _, err := n.query().Alert(strings.Repeat("0", 32)); err == nil {
		t.Fatal("an unknown alert id was found")
	}

	for _, tc := range []struct {
		name   string
		signer string
		msg    types.Msg
		want   app.Code
	}{
		{"first receipt", "o2", receipt(id, "pager"), app.CodeOK},
		{"repeat is a no-op", "o2", receipt(id, "pager"), app.CodeOK},
		{"another receiver", "o2", receipt(id, "am"), app.CodeOK},
		{"another node, same receiver", "o3", receipt(id, "pager"), app.CodeOK},
		{"operator is not an observer", "root", receipt(id, "pager"), app.CodeUnauthorized},
		{"unknown alert", "o1", receipt(strings.Repeat("a", 32), "pager"), app.CodeNotFound},
		{"not an alert id", "o1", receipt("xyz", "pager"), app.CodeInvalid},
		{"bad receiver name", "o1", receipt(id, "Pager/1"), app.CodeInvalid},
	} {
		if _, err := n.app.CheckTx(n.tx(tc.signer, tc.msg)); tc.want == app.CodeUnauthorized || tc.want == app.CodeInvalid {
			if app.CodeOf(err) != tc.want {
				t.Errorf("%s: CheckTx code %v, want %v", tc.name, app.CodeOf(err), tc.want)
			}
		}
		codes, _ := n.block(100, n.tx(tc.signer, tc.msg))
		if codes[0] != tc.want {
			t.Errorf("%s: code %v, want %v", tc.name, codes[0], tc.want)
		}
		if tc.name == "first receipt" {
			if d := n.app.Deliveries(); len(d) != 1 || d[0].Receiver != "pager" {
				t.Errorf("block deliveries %+v, want the pager receipt", d)
			}
			if !n.app.Changed().Alerts {
				t.Error("a receipt did not mark the alerts changed (blocking queries on alerts would not wake)")
			}
		}
		if tc.name == "repeat is a no-op" && len(n.app.Deliveries()) != 0 {
			t.Errorf("a repeated receipt was recorded again: %+v", n.app.Deliveries())
		}
	}
	ds, err := n.query().Deliveries(id)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.Receiver+"@"+d.Observer[:4])
		if d.Height == 0 || d.TimeMs == 0 || d.AlertId != id {
			t.Errorf("delivery %+v lacks its height, time or alert", d)
		}
	}
	o2, o3 := types.KeyID(key("o2").Public().(ed25519.PublicKey))[:4], types.KeyID(key("o3").Public().(ed25519.PublicKey))[:4]
	want := []string{"am@" + o2}
	pager := []string{"pager@" + o2, "pager@" + o3}
	if o3 < o2 {
		pager[0], pager[1] = pager[1], pager[0]
	}
	want = append(want, pager...)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("deliveries %v, want %v", got, want)
	}
}
