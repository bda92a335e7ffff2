package app_test

import (
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

func (n *net) standings() map[string]app.Standing {
	n.t.Helper()
	r, err := n.store.Reader(0)
	if err != nil {
		n.t.Fatal(err)
	}
	q, err := app.NewQuery(r)
	if err != nil {
		n.t.Fatal(err)
	}
	list, err := q.Standings()
	if err != nil {
		n.t.Fatal(err)
	}
	out := map[string]app.Standing{}
	for _, s := range list {
		out[s.Observer.Name] = s
	}
	return out
}

// TestObserverStanding: a liar's reports disagree with the agreed verdict;
// once enough of them do, it becomes suspect with one observer_suspect
// alert; its standing recovers when it tells the truth again and old
// reports leave the window.
func TestObserverStanding(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0))))
	var suspects []types.Alert
	for i := range app.SuspectMinReports + 5 {
		for _, al := range n.reportAll(1000, P, P, P, C) {
			switch al.Kind {
			case app.AlertObserverSuspect:
				suspects = append(suspects, al)
				if i+1 != app.SuspectMinReports {
					t.Fatalf("suspect after %d reports, want after %d", i+1, app.SuspectMinReports)
				}
			case app.AlertStateChange:
				t.Fatalf("a liar raised %+v", al)
			}
		}
	}
	n.wantState(P, P)
	st := n.standings()
	if len(suspects) != 1 || suspects[0].Observer != st["o4"].Observer.Id || !strings.Contains(suspects[0].Views[0].Output, "10 of 10 reports") {
		t.Fatalf("suspect alerts %+v, want one about o4", suspects)
	}
	if o4 := st["o4"]; !o4.Suspect || o4.Disagreed != 15 || o4.Agreed != 0 || o4.SuspectHeight == 0 {
		t.Fatalf("o4 standing %+v", o4)
	}
	if o1 := st["o1"]; o1.Suspect || o1.Agreed != 15 || o1.Disagreed != 0 {
		t.Fatalf("o1 standing %+v", o1)
	}

	// A disputed verdict counts for no one.
	n.reportAll(1000, P, P, C, C)
	n.wantState(types.STATUS_DISPUTED, P)
	if o1 := n.standings()["o1"]; o1.Agreed != 15 {
		t.Fatalf("a disputed verdict was counted: %+v", o1)
	}

	// Telling the truth for the whole window clears the suspicion.
	for range app.StandingWindowMs/1000 + 60 {
		for _, al := range n.reportAll(1000, P, P, P, P) {
			if al.Kind == app.AlertObserverSuspect {
				t.Fatalf("suspect again: %+v", al)
			}
		}
	}
	if o4 := n.standings()["o4"]; o4.Suspect || o4.Disagreed != 0 {
		t.Fatalf("o4 after the window: %+v", o4)
	}
}
