package app_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"pgregory.net/rapid"
)

func ptr(v uint64) *uint64 { return &v }

// reader is the committed state.
func (n *net) reader() app.Reader {
	n.t.Helper()
	r, err := n.store.Reader(0)
	if err != nil {
		n.t.Fatal(err)
	}
	return r
}

// usageOK asserts that the stored usage of every operator is what the
// stored entries and instances add up to, and within the quotas.
func usageOK(t interface{ Fatalf(string, ...any) }, r app.Reader, q types.Quotas, where string) map[string]types.Usage {
	stored, err := app.StoredUsage(r)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	sum, err := app.RecomputeUsage(r)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if fmt.Sprint(stored) != fmt.Sprint(sum) {
		t.Fatalf("%s: stored usage %v, the entries and instances add up to %v", where, stored, sum)
	}
	for op, u := range stored {
		if u.KvBytes > q.KvBytes || u.KvKeys > q.KvKeys || u.Instances > q.Instances {
			t.Fatalf("%s: operator %x uses %+v, above the quotas %+v", where, op, u, q)
		}
	}
	return stored
}

// TestQuotaGenesis: absent quotas take the defaults, given ones replace
// them (0 allows nothing), and the app keeps what genesis said.
func TestQuotaGenesis(t *testing.T) {
	def := types.Quotas{KvBytes: 64 << 20, KvKeys: 10_000, Instances: 100_000}
	for _, tc := range []struct {
		name, quotas string
		want         types.Quotas
	}{
		{"absent", ``, def},
		{"empty", `,"quotas":{}`, def},
		{"bytes only", `,"quotas":{"kv_bytes":100}`, types.Quotas{KvBytes: 100, KvKeys: 10_000, Instances: 100_000}},
		{"all", `,"quotas":{"kv_bytes":1,"kv_keys":2,"instances":0}`, types.Quotas{KvBytes: 1, KvKeys: 2, Instances: 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js := fmt.Sprintf(`{"observers":[{"name":"o1","pub_key":%q,"datacenter":"dc1","weight":1}]%s}`, pub64(key("o1")), tc.quotas)
			g, err := app.ParseGenesis([]byte(js))
			if err != nil {
				t.Fatal(err)
			}
			if got := g.Quotas.Resolve(); got != tc.want {
				t.Fatalf("resolved %+v, want %+v", got, tc.want)
			}
			n := newNetWith(t, g)
			if got := n.app.Quotas(); got != tc.want {
				t.Fatalf("app quotas %+v, want %+v", got, tc.want)
			}
		})
	}
	js := fmt.Sprintf(`{"observers":[{"name":"o1","pub_key":%q,"datacenter":"dc1","weight":1}],"quotas":{"kv_byte":1}}`, pub64(key("o1")))
	if _, err := app.ParseGenesis([]byte(js)); err == nil || !strings.Contains(err.Error(), "kv_byte") {
		t.Fatalf("a misspelt quota: %v", err)
	}
}

// TestQuotas: each write's charge, refusals past each quota, the charge
// moving to the writer of an overwrite, and usage freed by deletes,
// delete-trees, a behavior-delete session's end and deregistration.
func TestQuotas(t *testing.T) {
	g := genesis()
	g.Quotas = &app.GenesisQuotas{KVBytes: ptr(20), KVKeys: ptr(2), Instances: ptr(1)}
	n := newNetWith(t, g)
	web2 := webInstance(0)
	web2.Id = "web-2"
	var sid string
	type usage struct{ root, team types.Usage }
	u := func(b, k, i uint64) types.Usage { return types.Usage{KvBytes: b, KvKeys: k, Instances: i} }
	for _, tc := range []struct {
		name   string
		signer string
		msg    func() types.Msg
		want   app.Code
		msg2   string // in the refusal
		usage  usage
	}{
		{"a set counts key and value", "root", func() types.Msg { return kvSet("a", "12345") }, app.CodeOK, "", usage{root: u(6, 1, 0)}},
		{"past kv_bytes", "root", func() types.Msg { return kvSet("b", strings.Repeat("x", 14)) }, app.CodeQuota,
			"kv_bytes quota: this would make 21 bytes of key/value (keys plus values) it wrote, and the quota is 20 (now 6)", usage{root: u(6, 1, 0)}},
		{"an overwrite charges the difference", "root", func() types.Msg { return kvSet("a", "1") }, app.CodeOK, "", usage{root: u(2, 1, 0)}},
		{"second key", "root", func() types.Msg { return kvSet("b", "xy") }, app.CodeOK, "", usage{root: u(5, 2, 0)}},
		{"past kv_keys", "root", func() types.Msg { return kvSet("c", "") }, app.CodeQuota, "kv_keys quota", usage{root: u(5, 2, 0)}},
		{"a txn is charged its net effect", "root", func() types.Msg {
			return kvTxn(types.KVOp{Verb: "delete", Key: "a"}, types.KVOp{Verb: "set", Key: "c", Value: []byte("z")})
		}, app.CodeOK, "", usage{root: u(5, 2, 0)}},
		{"another operator's keys", "team", func() types.Msg { return kvSet("team-x", "abc") }, app.CodeOK, "", usage{root: u(5, 2, 0), team: u(9, 1, 0)}},
		{"an overwrite past the writer's quota is refused", "root", func() types.Msg { return kvSet("team-x", "1") }, app.CodeQuota, "kv_keys", usage{root: u(5, 2, 0), team: u(9, 1, 0)}},
		{"delete-tree frees", "root", func() types.Msg { return kvDelete("", true) }, app.CodeOK, "", usage{}},
		{"an overwrite moves the charge to the writer", "root", func() types.Msg { return kvSet("team-x", "1") }, app.CodeOK, "", usage{root: u(7, 1, 0)}},
		{"an instance", "root", func() types.Msg { return register(webInstance(0)) }, app.CodeOK, "", usage{root: u(7, 1, 1)}},
		{"updating it is no new instance", "root", func() types.Msg { return register(webInstance(1000)) }, app.CodeOK, "", usage{root: u(7, 1, 1)}},
		{"past instances", "root", func() types.Msg { return register(web2) }, app.CodeQuota, "instances quota", usage{root: u(7, 1, 1)}},
		{"a lock of a delete session", "root", func() types.Msg {
			sid = n.newSession(1000, &types.SessionCreate{Service: "web", Instance: "web-1", Behavior: app.BehaviorDelete})
			return kvAcquire("lead", "me", sid)
		}, app.CodeOK, "", usage{root: u(13, 2, 1)}},
		{"its end deletes the key and frees it", "root", func() types.Msg { return sessionDestroy(sid) }, app.CodeOK, "", usage{root: u(7, 1, 1)}},
		{"deregistration frees the instance", "root", func() types.Msg {
			return types.Msg{Sum: &types.Msg_Deregister{Deregister: &types.DeregisterService{Name: "web", Id: "web-1"}}}
		}, app.CodeOK, "", usage{root: u(7, 1, 0)}},
		{"and another fits", "root", func() types.Msg { return register(web2) }, app.CodeOK, "", usage{root: u(7, 1, 1)}},
	} {
		before, _ := n.query().KVList("")
		err := n.run(1000, n.tx(tc.signer, tc.msg()))[0]
		if app.CodeOf(err) != tc.want || (tc.msg2 != "" && !strings.Contains(fmt.Sprint(err), tc.msg2)) {
			t.Fatalf("%s: %v, want code %s saying %q", tc.name, err, tc.want, tc.msg2)
		}
		if tc.want == app.CodeQuota {
			if !strings.Contains(err.Error(), "genesis") {
				t.Fatalf("%s: the refusal does not say how to raise the quota: %v", tc.name, err)
			}
			if after, _ := n.query().KVList(""); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("%s: a refused write changed the entries:\n%v\n%v", tc.name, before, after)
			}
		}
		stored := usageOK(t, n.reader(), n.app.Quotas(), tc.name)
		if got := (usage{stored[string(pubOf("root"))], stored[string(pubOf("team"))]}); got != tc.usage {
			t.Fatalf("%s: usage %+v, want %+v", tc.name, got, tc.usage)
		}
	}
}

// TestQuotaUsageIsTheSumOfEntries: under random sets, deletes,
// delete-trees and txns by two operators, every operator's stored usage is
// the sum over the entries it last wrote, no usage exceeds a quota, and a
// write is refused (code quota) exactly when the naive model says it would
// take its signer past a quota.
func TestQuotaUsageIsTheSumOfEntries(t *testing.T) {
	const maxBytes, maxKeys = 40, 3
	keys := []string{"team-a", "team-b", "team-c", "team-d/x", "team-d/y"}
	refused := 0
	rapid.Check(t, func(rt *rapid.T) {
		g := genesis()
		g.Quotas = &app.GenesisQuotas{KVBytes: ptr(maxBytes), KVKeys: ptr(maxKeys)}
		n := newNetWith(t, g)
		type ent struct {
			writer string
			size   int
		}
		model := map[string]ent{}
		for range rapid.IntRange(1, 30).Draw(rt, "steps") {
			signer := rapid.SampledFrom([]string{"root", "team"}).Draw(rt, "signer")
			var ops []types.KVOp
			for range rapid.IntRange(1, 3).Draw(rt, "ops") {
				op := types.KVOp{
					Verb:  rapid.SampledFrom([]string{"set", "set", "set", "delete", "delete-tree"}).Draw(rt, "verb"),
					Key:   rapid.SampledFrom(keys).Draw(rt, "key"),
					Value: []byte(strings.Repeat("v", rapid.IntRange(0, 12).Draw(rt, "len"))),
				}
				if op.Verb == "delete-tree" {
					op.Key = rapid.SampledFrom([]string{"team-d/", "team-"}).Draw(rt, "prefix")
				}
				ops = append(ops, op)
			}
			next := map[string]ent{}
			for k, e := range model {
				next[k] = e
			}
			for _, op := range ops {
				switch op.Verb {
				case "set":
					next[op.Key] = ent{signer, len(op.Key) + len(op.Value)}
				case "delete":
					delete(next, op.Key)
				case "delete-tree":
					for k := range next {
						if strings.HasPrefix(k, op.Key) {
							delete(next, k)
						}
					}
				}
			}
			sum := func(m map[string]ent) (b, k int) {
				for _, e := range m {
					if e.writer == signer {
						b, k = b+e.size, k+1
					}
				}
				return
			}
			b0, k0 := sum(model)
			b1, k1 := sum(next)
			wantRefused := (b1 > b0 && b1 > maxBytes) || (k1 > k0 && k1 > maxKeys)
			err := n.run(1000, n.tx(signer, kvTxn(ops...)))[0]
			if gotRefused := app.CodeOf(err) == app.CodeQuota; gotRefused != wantRefused || (err != nil && !gotRefused) {
				rt.Fatalf("%s %v: %v, the model says refused=%v (bytes %d→%d, keys %d→%d)", signer, ops, err, wantRefused, b0, b1, k0, k1)
			}
			if err == nil {
				model = next
			} else {
				refused++
			}
			usageOK(rt, n.reader(), n.app.Quotas(), fmt.Sprintf("height %d", n.height))
		}
	})
	if refused == 0 {
		t.Fatalf("no write was refused: the test never reached a quota")
	}
}

// TestGenesisQuietBound: quiet_ms is accepted up to half of app.GapMs, so
// that an idle network's quiet blocks never look like a gap between blocks
// (after which reports are judged at the gap's start), and refused above.
func TestGenesisQuietBound(t *testing.T) {
	for _, tc := range []struct {
		quiet int64
		ok    bool
	}{{0, true}, {app.DefaultQuietMs, true}, {app.GapMs / 2, true}, {app.GapMs/2 + 1, false}, {-1, false}} {
		js := fmt.Sprintf(`{"observers":[{"name":"o1","pub_key":%q,"datacenter":"dc1","weight":1}],"quiet_ms":%d}`, pub64(key("o1")), tc.quiet)
		_, err := app.ParseGenesis([]byte(js))
		if (err == nil) != tc.ok {
			t.Errorf("quiet_ms %d: err = %v, want accepted %v", tc.quiet, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "quiet_ms") {
			t.Errorf("quiet_ms %d: the error does not name quiet_ms: %v", tc.quiet, err)
		}
	}
}
