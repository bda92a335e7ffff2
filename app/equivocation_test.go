package app_test

import (
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

func equivocation(first, second []byte) types.Msg {
	return types.Msg{Sum: &types.Msg_Equivocation{Equivocation: &types.EquivocationEvidence{First: first, Second: second}}}
}

// signAt signs msg by signer under an explicit nonce.
func signAt(t *testing.T, signer string, nonce uint64, msg types.Msg) []byte {
	t.Helper()
	bz, err := types.SignTx(chainID, key(signer), nonce, msg)
	if err != nil {
		t.Fatal(err)
	}
	return bz
}

// TestEquivocationIsEvidence (issue 22 item 7): two validly signed bodies
// of one observer under one nonce, submitted by anyone with a key of the
// chain, are recorded; the observer becomes suspect for good with an
// observer_equivocated alert. Pairs that are no equivocation are refused,
// saying why, and the same equivocation is recorded once.
func TestEquivocationIsEvidence(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0))))
	n.reportAll(1000, P, P, P, P)
	nonce := n.nonce["o1"] + 1
	n.nonce["o1"] = nonce
	passing := signAt(t, "o1", nonce, observe(obsOf(P)))
	critical := signAt(t, "o1", nonce, observe(obsOf(C)))
	// The proposer includes one; the other is a replay of its nonce.
	if codes, _ := n.block(1000, passing, critical); codes[0] != app.CodeOK || codes[1] != app.CodeReplay {
		t.Fatalf("codes %v, want the first applied and the second a replay", codes)
	}
	other := signAt(t, "o2", n.nonce["o2"]+1, observe(obsOf(C)))
	later := signAt(t, "o1", nonce+1, observe(obsOf(C)))
	forged := append([]byte{}, critical...)
	forged[len(forged)-1] ^= 1
	bad := []struct {
		name   string
		first  []byte
		second []byte
		code   app.Code
	}{
		{"the same body twice", passing, passing, app.CodeInvalid},
		{"two signers", passing, other, app.CodeInvalid},
		{"two nonces", passing, later, app.CodeInvalid},
		{"a forged signature", passing, forged, app.CodeBadSignature},
		{"an operator's two bodies", signAt(t, "team", 99, kvSet("team-a", "1")), signAt(t, "team", 99, kvSet("team-a", "2")), app.CodeInvalid},
	}
	for _, b := range bad {
		codes, alerts := n.block(1000, n.tx("root", equivocation(b.first, b.second)))
		if codes[0] != b.code || equivocated(alerts) != 0 {
			t.Errorf("%s: code %v, alerts %+v; want %v and no observer_equivocated", b.name, codes[0], alerts, b.code)
		}
	}
	// An observer submits the real pair (anyone with a key may).
	n.reportAll(1000, P, P, P, P)
	codes, alerts := n.block(1000, n.tx("o3", equivocation(critical, passing)))
	if codes[0] != app.CodeOK || len(alerts) != 1 || equivocated(alerts) != 1 {
		t.Fatalf("evidence: code %v, alerts %+v; want recorded with one observer_equivocated alert", codes[0], alerts)
	}
	q := n.query()
	evs, err := q.Equivocations()
	if err != nil || len(evs) != 1 || evs[0].Nonce != nonce || evs[0].Observer != alerts[0].Observer {
		t.Fatalf("evidence recorded: %+v %v", evs, err)
	}
	for _, s := range mustStandingsT(t, q) {
		if (s.Observer.Name == "o1") != s.Suspect {
			t.Errorf("%s suspect %v after o1's equivocation", s.Observer.Name, s.Suspect)
		}
	}
	if codes, _ := n.block(1000, n.tx("root", equivocation(passing, critical))); codes[0] != app.CodeConflict {
		t.Errorf("the same equivocation again: code %v, want conflict (recorded once)", codes[0])
	}
	// Agreeing reports for the whole standing window do not clear it.
	for range 40 {
		n.reportAll(10_000, P, P, P, P)
	}
	for _, s := range mustStandingsT(t, n.query()) {
		if s.Observer.Name == "o1" && !s.Suspect {
			t.Errorf("o1 cleared of suspicion after agreeing for %d s: evidence of equivocation keeps it suspect", 400)
		}
	}
}

func equivocated(alerts []types.Alert) int {
	k := 0
	for _, al := range alerts {
		if al.Kind == app.AlertObserverEquivocated {
			k++
		}
	}
	return k
}

func mustStandingsT(t *testing.T, q *app.Query) []app.Standing {
	t.Helper()
	list, err := q.Standings()
	if err != nil {
		t.Fatal(err)
	}
	return list
}
