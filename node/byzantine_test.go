package node

import (
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app/types"
)

func TestParseByzantine(t *testing.T) {
	for _, tc := range []struct {
		in, err string
		n       int
	}{
		{"", "", 0},
		{"always-critical", "", 1},
		{"replay, equivocate,garbage,flood", "", 4},
		{"invert,replay", "", 2},
		{"forge-receipts", "", 1},
		{"always-passing,forge-receipts", "", 2},
		{"lying-api", "", 1},
		{"invert,lying-api,replay", "", 3},
		{"lie", `unknown mode`, 0},
		{"always-passing,random", "at most one of", 0},
	} {
		modes, err := ParseByzantine(tc.in)
		if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) || len(modes) != tc.n {
			t.Errorf("ParseByzantine(%q) = %v, %v; want %d modes, error %q", tc.in, modes, err, tc.n, tc.err)
		}
	}
}

func TestByzantineLies(t *testing.T) {
	honest := []types.Observation{
		{Check: "a", Status: types.STATUS_PASSING, Unchanged: true},
		{Check: "b", Status: types.STATUS_CRITICAL, Output: "refused"},
		{Check: "c", Status: types.STATUS_WARNING, Output: "slow"},
		{Check: "d", Status: types.STATUS_UNKNOWN, Output: "?"},
	}
	P, W, C, U := types.STATUS_PASSING, types.STATUS_WARNING, types.STATUS_CRITICAL, types.STATUS_UNKNOWN
	for _, tc := range []struct {
		mode string
		want []types.Status
	}{
		{ByzAlwaysCritical, []types.Status{C, C, C, C}},
		{ByzAlwaysPassing, []types.Status{P, P, P, P}},
		{ByzInvert, []types.Status{C, P, P, U}},
		{ByzReplay, []types.Status{P, C, W, U}}, // replays, but reports the truth
	} {
		b := &byzantine{modes: []string{tc.mode}}
		got := b.lie(honest)
		for i, o := range got {
			if o.Status != tc.want[i] {
				t.Errorf("%s: report %s is %s, want %s", tc.mode, o.Check, o.Status.Name(), tc.want[i].Name())
			}
			if o.Status != honest[i].Status && (o.Unchanged || o.Output == "") {
				t.Errorf("%s: a changed report must carry its output: %+v", tc.mode, o)
			}
		}
		if honest[1].Status != C {
			t.Fatal("lie must not modify its input")
		}
	}
	random := (&byzantine{modes: []string{ByzRandom}}).lie(honest)
	for _, o := range random {
		if o.Status < P || o.Status > U {
			t.Errorf("random made %v", o.Status)
		}
	}
	var honestB *byzantine
	if got := honestB.lie(honest); &got[0] != &honest[0] {
		t.Error("an honest observer's batch must pass through untouched")
	}
}

func TestObserverModes(t *testing.T) {
	if got := observerModes([]string{ByzInvert, ByzLyingAPI, ByzReplay}); len(got) != 2 || got[0] != ByzInvert || got[1] != ByzReplay {
		t.Errorf("observerModes = %q", got)
	}
	if got := observerModes([]string{ByzLyingAPI}); len(got) != 0 {
		t.Errorf("lying-api alone makes the observer misbehave: %q", got)
	}
}
