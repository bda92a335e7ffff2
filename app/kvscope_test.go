package app_test

import (
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// kvUniverse are the keys the scope property writes and watches: keys of
// services (web, west, s, team-web), and keys outside services/ that raw
// prefixes match.
var kvUniverse = []string{
	"services/web/config", "services/web/leader", "services/west/x", "services/s/x",
	"services/team-web/leader", "services/web", "s/x", "sx", "svc", "team-x/cfg", "web/a", "other",
}

// kvCovers is the rule, said independently of the app: a key under
// services/NAME/ belongs to the service NAME, and an operator touches it
// only if a prefix of its covers that name; a key under services/ with no
// whole NAME/ segment belongs to no one service, and only the prefix ""
// covers it; any other key, if it starts with a prefix of the operator's.
func kvCovers(prefixes []string, key string) bool {
	if rest, ok := strings.CutPrefix(key, app.ServicesKVPrefix); ok {
		name, _, named := strings.Cut(rest, "/")
		if !named {
			name = "" // no one service's: only the prefix "" covers it
		}
		for _, p := range prefixes {
			if !named && p != "" {
				continue
			}
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// TestKVScopeFollowsServiceNames: over random operator scopes and random
// writes (set, delete, delete-tree, txn) of random keys and prefixes, no
// key an operator's scope does not cover changes, and every write of a
// covered single key goes through (issue 22: an operator of the service
// prefix "s" overwrote services/web/config, matched raw).
func TestKVScopeFollowsServiceNames(t *testing.T) {
	prefixPool := []string{"", "s", "se", "services/", "services/w", "w", "we", "web", "web-", "team-", "x"}
	keyPool := append([]string{"", "s", "se", "services/", "services/w", "services/we", "services/web/", "services/web/c", "team-"}, kvUniverse...)
	writes, refused := 0, 0
	rapid.Check(t, func(rt *rapid.T) {
		prefixes := rapid.SliceOfNDistinct(rapid.SampledFrom(prefixPool), 1, 3, rapid.ID[string]).Draw(rt, "prefixes")
		g := genesis()
		g.Operators = append(g.Operators, app.GenesisOperator{Name: "rnd", PubKey: pub64(key("rnd")), Prefixes: prefixes})
		n := newNetWith(t, g)
		seed := make([]types.Msg, len(kvUniverse))
		for i, k := range kvUniverse {
			seed[i] = kvSet(k, "root")
		}
		n.must(1000, "root", seed...)
		for range rapid.IntRange(1, 6).Draw(rt, "blocks") {
			before := map[string]string{}
			for _, k := range kvUniverse {
				if e, ok := n.entry(k); ok {
					before[k] = string(e.Value)
				}
			}
			k := rapid.SampledFrom(keyPool).Draw(rt, "key")
			var msg types.Msg
			single := false
			switch rapid.IntRange(0, 3).Draw(rt, "verb") {
			case 0:
				msg, single = kvSet(k, "rnd"), k != ""
			case 1:
				msg, single = kvDelete(k, false), k != ""
			case 2:
				msg = kvDelete(k, true)
			case 3:
				k2 := rapid.SampledFrom(kvUniverse).Draw(rt, "second key")
				msg = kvTxn(types.KVOp{Verb: app.VerbSet, Key: k2, Value: []byte("rnd")}, types.KVOp{Verb: app.VerbDeleteTree, Key: k})
			}
			err := n.run(1000, n.tx("rnd", msg))[0]
			writes++
			if app.CodeOf(err) == app.CodeUnauthorized {
				refused++
			}
			if single && kvCovers(prefixes, k) && err != nil {
				rt.Fatalf("operator %q: a write of %q, which its scope covers, was refused: %v", prefixes, k, err)
			}
			for _, u := range kvUniverse {
				e, ok := n.entry(u)
				now := ""
				if ok {
					now = string(e.Value)
				}
				if now != before[u] && !kvCovers(prefixes, u) {
					rt.Fatalf("operator %q changed %q (%q → %q), which its scope does not cover, with %s (err %v)", prefixes, u, before[u], now, msg.String(), err)
				}
			}
		}
	})
	if refused == 0 || refused == writes {
		t.Errorf("of %d random writes %d were refused: the histories did not exercise the scope rule both ways", writes, refused)
	}
	t.Logf("%d random writes, %d refused as outside the operator's scope", writes, refused)
}
