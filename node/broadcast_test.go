package node

import (
	"crypto/ed25519"
	"testing"

	"github.com/bftmon/bftmon/abci"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// TestWaitersFollowSignedContent: a waiter is woken by the outcome of what
// its signer signed, whatever envelope bytes carried it, and not by an
// outcome saying some bytes did not decode.
func TestWaitersFollowSignedContent(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	tx, err := types.SignTx("c", priv, 7, types.Msg{Sum: &types.Msg_Deregister{Deregister: &types.DeregisterService{Name: "web", Id: "web-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	copyTx := append(append([]byte{}, tx...), 0x78, 0x01) // re-encoded by someone else
	content, _ := types.ContentID(tx)
	b := newBroadcaster(nil)
	ch := make(chan TxResult, 1)
	b.waiters[waitKey(tx)] = []chan TxResult{ch}
	outcome := func(bz []byte, code app.Code) abci.TxOutcome {
		c, _ := types.ContentID(bz)
		return abci.TxOutcome{Hash: types.TxHash(bz), Content: c, Code: uint32(code)}
	}
	b.committed(abci.Block{Height: 5, Txs: []abci.TxOutcome{outcome(copyTx, app.CodeMalformed)}})
	select {
	case r := <-ch:
		t.Fatalf("woken by a malformed copy: %+v", r)
	default:
	}
	b.committed(abci.Block{Height: 6, Txs: []abci.TxOutcome{outcome(tx, app.CodeOK)}})
	select {
	case r := <-ch:
		if r.Height != 6 || r.Code != 0 {
			t.Fatalf("woken with %+v", r)
		}
	default:
		t.Fatalf("not woken by the commit of content %s", content)
	}
	if len(b.waiters) != 0 {
		t.Fatalf("waiters left: %v", b.waiters)
	}
}
