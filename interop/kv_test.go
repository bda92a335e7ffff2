package interop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// Tokens of the key/value tests' node: the genesis operator (every key),
// and a team operator whose scope is the prefix team/.
const (
	rootToken = "root-token-0123456789abcdef"
	teamToken = "team-token-0123456789abcdef"
)

// startKVNode starts a one-node network with a second operator "team"
// (prefix team/) and config/tokens.json mapping rootToken and teamToken to
// their keys, bound to the instance web/web-1 for sessions; web-1 is
// registered and passing. edits change the genesis app_state further.
func startKVNode(ctx context.Context, t *testing.T, edits ...func(appState map[string]any)) *testNode {
	t.Helper()
	tn := startNodeHome(ctx, t, nil, func(home string) {
		team, err := keys.Generate("team")
		if err != nil {
			t.Fatal(err)
		}
		if err := keys.Save(filepath.Join(home, "config/team_key.json"), team); err != nil {
			t.Fatal(err)
		}
		gpath := filepath.Join(home, "config/genesis.json")
		bz, err := os.ReadFile(gpath)
		if err != nil {
			t.Fatal(err)
		}
		var g map[string]any
		if err := json.Unmarshal(bz, &g); err != nil {
			t.Fatal(err)
		}
		as := g["app_state"].(map[string]any)
		as["operators"] = append(as["operators"].([]any), map[string]any{"name": "team", "pub_key": team.PubBase64(), "prefixes": []string{"team/"}})
		for _, edit := range edits {
			edit(as)
		}
		if bz, err = json.MarshalIndent(g, "", "  "); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(gpath, bz, 0o644); err != nil {
			t.Fatal(err)
		}
		tokens := fmt.Sprintf(`{"tokens": [
			{"token": %q, "key": %q, "service": "web", "instance": "web-1"},
			{"token": %q, "key": "config/team_key.json"}]}`, rootToken, node.OperatorKeyFile, teamToken)
		if err := os.WriteFile(filepath.Join(home, node.TokensFile), []byte(tokens), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	tn.register(ctx, t, tn.instance("web", "web-1", "127.0.0.1", 80, nil))
	tn.waitPassing(ctx, t, "web", 1)
	return tn
}

// do sends one request to the node and returns the status, the body and
// the headers.
func do(t *testing.T, method, url, token string, body []byte) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Consul-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	bz, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bz), resp.Header
}

// TestKVHTTP: the /v1/kv routes on a real node, good and bad input.
func TestKVHTTP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startKVNode(ctx, t)
	base := "http://" + tn.httpAddr
	code, body, _ := do(t, http.MethodPut, base+"/v1/kv/app/config", rootToken, []byte("v1"))
	if code != 200 || strings.TrimSpace(body) != "true" {
		t.Fatalf("put: %d %s", code, body)
	}
	_, body, _ = do(t, http.MethodGet, base+"/v1/kv/app/config", "", nil)
	var pairs []api.KVPair
	if err := json.Unmarshal([]byte(body), &pairs); err != nil || len(pairs) != 1 || string(pairs[0].Value) != "v1" {
		t.Fatalf("get: %s %v", body, err)
	}
	stale := pairs[0].ModifyIndex - 1
	cases := []struct {
		name, method, path, token string
		body                      []byte
		code                      int
		want                      string // in the body, or a header's value as "Header: value"
	}{
		{"no token", "PUT", "/v1/kv/a", "", []byte("x"), 403, "no token"},
		{"unknown token", "PUT", "/v1/kv/a", "not-a-token-at-all-here", []byte("x"), 403, "unknown token"},
		{"empty key", "PUT", "/v1/kv/", rootToken, []byte("x"), 400, "key is empty"},
		{"key too long", "PUT", "/v1/kv/" + strings.Repeat("k", 600), rootToken, []byte("x"), 400, "at most 512"},
		{"invalid UTF-8", "PUT", "/v1/kv/%FF%FE", rootToken, []byte("x"), 400, "not valid UTF-8"},
		{"value too large", "PUT", "/v1/kv/big", rootToken, make([]byte, 512<<10+1), 413, "value above"},
		{"stale cas", "PUT", fmt.Sprintf("/v1/kv/app/config?cas=%d", stale), rootToken, []byte("x"), 200, "false"},
		{"stale cas says the index", "PUT", fmt.Sprintf("/v1/kv/app/config?cas=%d", stale), rootToken, []byte("x"), 200,
			fmt.Sprintf("X-Bftmon-Refusal: current modify index is %d", pairs[0].ModifyIndex)},
		{"cas 0 on an existing key", "PUT", "/v1/kv/app/config?cas=0", rootToken, []byte("x"), 200, "false"},
		{"out of scope", "PUT", "/v1/kv/app/other", teamToken, []byte("x"), 403, "team/"},
		{"in scope", "PUT", "/v1/kv/team/x", teamToken, []byte("x"), 200, "true"},
		{"unknown session", "PUT", "/v1/kv/app/lock?acquire=00000000-0000-8000-8000-000000000000", rootToken, nil, 400, "unknown or was invalidated"},
		{"missing key", "GET", "/v1/kv/nope", "", nil, 404, ""},
		{"raw", "GET", "/v1/kv/app/config?raw", "", nil, 200, "v1"},
		{"keys", "GET", "/v1/kv/?keys&separator=/", "", nil, 200, `"app/"`},
		{"proven", "GET", "/v1/kv/app/config?proof=1", "", nil, 200, `"proofs"`},
		{"proven missing", "GET", "/v1/kv/nope?proof=1", "", nil, 200, `"proofs"`},
		{"bad cas", "PUT", "/v1/kv/a?cas=x", rootToken, nil, 400, "cas"},
		{"txn fails whole", "PUT", "/v1/txn", rootToken, []byte(`[{"KV":{"Verb":"set","Key":"app/t1","Value":"eA=="}},{"KV":{"Verb":"cas","Key":"app/config","Index":1}}]`), 409, `"OpIndex": 1`},
		{"txn applies", "PUT", "/v1/txn", rootToken, []byte(`[{"KV":{"Verb":"set","Key":"app/t2","Value":"eA=="}},{"KV":{"Verb":"get","Key":"app/config"}}]`), 200, `"Key": "app/t2"`},
		{"session of an unknown instance", "PUT", "/v1/session/create", rootToken, []byte(`{"Node": "nope", "TTL": "15s"}`), 400, "no registered instance"},
		{"session without Node, token bound to none", "PUT", "/v1/session/create", teamToken, []byte(`{"TTL": "15s"}`), 400, "binds to no instance"},
		{"session with a bad TTL", "PUT", "/v1/session/create", rootToken, []byte(`{"TTL": "soon"}`), 400, "TTL"},
		{"session with a TTL out of range", "PUT", "/v1/session/create", rootToken, []byte(`{"TTL": "1s"}`), 400, "ttl"},
		{"session create without token", "PUT", "/v1/session/create", "", []byte(`{}`), 403, "no token"},
		{"session of web-1 by Node", "PUT", "/v1/session/create", rootToken, []byte(`{"Node": "web-1", "TTL": "15s", "LockDelay": "0s"}`), 200, `"ID"`},
		{"renew unknown", "PUT", "/v1/session/renew/00000000-0000-8000-8000-000000000000", rootToken, nil, 404, "not found"},
		{"info unknown", "GET", "/v1/session/info/00000000-0000-8000-8000-000000000000", "", nil, 200, "[]"},
		{"sessions of web-1", "GET", "/v1/session/node/web-1", "", nil, 200, `"Node": "web-1"`},
		{"non-KV txn op", "PUT", "/v1/txn", rootToken, []byte(`[{"Node": {}}]`), 400, "only KV"},
		{"read-only txn without token", "PUT", "/v1/txn", "", []byte(`[{"KV":{"Verb":"get","Key":"app/config"}}]`), 200, `"Value": "djE="`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, body, h := do(t, c.method, base+c.path, c.token, c.body)
			if code != c.code {
				t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.code)
			}
			if name, v, ok := strings.Cut(c.want, ": "); ok && strings.HasPrefix(name, "X-") {
				if !strings.Contains(h.Get(name), v) {
					t.Errorf("%s: %q, want %q in it", name, h.Get(name), v)
				}
			} else if !strings.Contains(body, c.want) {
				t.Errorf("body %s, want %q in it", body, c.want)
			}
		})
	}
	if code, body, _ := do(t, "GET", base+"/v1/kv/app/t1", "", nil); code != 404 {
		t.Errorf("a failed txn applied its set: %d %s", code, body)
	}
	if _, _, h := do(t, "GET", base+"/v1/kv/nope", "", nil); h.Get("X-Consul-Index") == "" {
		t.Errorf("404 of a missing key without X-Consul-Index")
	}
}

// TestKVCASRace: two clients CAS the same counter each round from the same
// index: exactly one wins each round, and no increment is lost.
func TestKVCASRace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startKVNode(ctx, t)
	w := tn.client.Token(rootToken)
	if ok, _, err := w.KVPut(ctx, "race/n", []byte("0"), nil); err != nil || !ok {
		t.Fatalf("put: %v %v", ok, err)
	}
	const rounds = 8
	for round := 1; round <= rounds; round++ {
		p, _, err := tn.client.KVGet(ctx, "race/n", nil)
		if err != nil || p == nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint(round - 1); string(p.Value) != want {
			t.Fatalf("round %d: value %q, want %q", round, p.Value, want)
		}
		var wins atomic.Int32
		var wg sync.WaitGroup
		for c := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, _, err := w.KVPut(ctx, "race/n", []byte(fmt.Sprint(round)), map[string][]string{"cas": {fmt.Sprint(p.ModifyIndex)}})
				if err != nil {
					t.Errorf("round %d client %d: %v", round, c, err)
				}
				if ok {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("round %d: %d winners, want 1", round, n)
		}
	}
}

// consulClient is Consul's own Go client against the node.
func consulClient(t *testing.T, tn *testNode, token string) *consulapi.Client {
	t.Helper()
	return consulClientAt(t, tn.httpAddr, token)
}

// consulClientAt is Consul's own Go client against addr (a node, or a
// verifying proxy of one).
func consulClientAt(t *testing.T, addr, token string) *consulapi.Client {
	t.Helper()
	c, err := consulapi.NewClient(&consulapi.Config{Address: addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConsulKVClient: Consul's Go client, unchanged, reads, writes, CASes,
// lists and deletes keys, runs txns and sessions, and elects with Lock and
// Semaphore.
func TestConsulKVClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tn := startKVNode(ctx, t)
	c := consulClient(t, tn, rootToken)
	kv := c.KV()
	if _, err := kv.Put(&consulapi.KVPair{Key: "cfg/a", Value: []byte("1"), Flags: 42}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(&consulapi.KVPair{Key: "cfg/sub/b", Value: []byte("2")}, nil); err != nil {
		t.Fatal(err)
	}
	p, meta, err := kv.Get("cfg/a", nil)
	if err != nil || p == nil || string(p.Value) != "1" || p.Flags != 42 || meta.LastIndex == 0 {
		t.Fatalf("get: %+v %+v %v", p, meta, err)
	}
	if p, _, err := kv.Get("cfg/none", nil); err != nil || p != nil {
		t.Fatalf("get of a missing key: %+v %v", p, err)
	}
	list, _, err := kv.List("cfg/", nil)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	ks, _, err := kv.Keys("cfg/", "/", nil)
	if err != nil || strings.Join(ks, ",") != "cfg/a,cfg/sub/" {
		t.Fatalf("keys: %v %v", ks, err)
	}
	stale := &consulapi.KVPair{Key: "cfg/a", Value: []byte("x"), ModifyIndex: p.ModifyIndex - 1}
	if ok, _, err := kv.CAS(stale, nil); err != nil || ok {
		t.Fatalf("stale cas: %v %v", ok, err)
	}
	p.Value = []byte("3")
	if ok, _, err := kv.CAS(p, nil); err != nil || !ok {
		t.Fatalf("cas: %v %v", ok, err)
	}
	// A blocking Get wakes on the change.
	p, meta, _ = kv.Get("cfg/a", nil)
	done := make(chan *consulapi.KVPair, 1)
	go func() {
		np, _, _ := kv.Get("cfg/a", &consulapi.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: time.Minute})
		done <- np
	}()
	if _, err := kv.Put(&consulapi.KVPair{Key: "cfg/a", Value: []byte("4")}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case np := <-done:
		if np == nil || string(np.Value) != "4" {
			t.Fatalf("blocking get: %+v", np)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("blocking get did not wake")
	}
	ok, resp, _, err := c.Txn().Txn(consulapi.TxnOps{
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVSet, Key: "cfg/t", Value: []byte("t")}},
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVGet, Key: "cfg/a"}},
	}, nil)
	if err != nil || !ok || len(resp.Results) != 2 || string(resp.Results[1].KV.Value) != "4" {
		t.Fatalf("txn: %v %+v %v", ok, resp, err)
	}
	ok, resp, _, err = c.Txn().Txn(consulapi.TxnOps{
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVSet, Key: "cfg/u", Value: []byte("u")}},
		{KV: &consulapi.KVTxnOp{Verb: consulapi.KVCheckNotExists, Key: "cfg/a"}},
	}, nil)
	if err != nil || ok || len(resp.Errors) != 1 || resp.Errors[0].OpIndex != 1 {
		t.Fatalf("failing txn: %v %+v %v", ok, resp, err)
	}
	if _, err := kv.Delete("cfg/t", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.DeleteTree("cfg/", nil); err != nil {
		t.Fatal(err)
	}
	if list, _, _ := kv.List("cfg/", nil); len(list) != 0 {
		t.Fatalf("after delete-tree: %v", list)
	}

	// Sessions.
	ss := c.Session()
	id, _, err := ss.Create(&consulapi.SessionEntry{Name: "s", TTL: "20s", Behavior: consulapi.SessionBehaviorRelease}, nil)
	if err != nil || id == "" {
		t.Fatalf("session create: %q %v", id, err)
	}
	info, _, err := ss.Info(id, nil)
	if err != nil || info == nil || info.Node != "web-1" || info.TTL != "20s" {
		t.Fatalf("session info: %+v %v", info, err)
	}
	if e, _, err := ss.Renew(id, nil); err != nil || e == nil {
		t.Fatalf("renew: %+v %v", e, err)
	}
	if ok, _, err := kv.Acquire(&consulapi.KVPair{Key: "lk", Session: id}, nil); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if _, err := ss.Destroy(id, nil); err != nil {
		t.Fatal(err)
	}
	if info, _, _ := ss.Info(id, nil); info != nil {
		t.Fatalf("destroyed session still there: %+v", info)
	}

	t.Run("Lock", func(t *testing.T) { consulLock(t, tn.httpAddr) })
	t.Run("Semaphore", func(t *testing.T) { consulSemaphore(t, tn.httpAddr) })
	// Through the verifying proxy (issue 22 item 4): the helpers read
	// their key right after taking it, and a read from before the write's
	// commit made them lose every lock at once. The proxy raises its floor
	// to each write's commit height.
	proxy := verifyingProxy(ctx, t, tn)
	t.Run("Lock through the verifying proxy", func(t *testing.T) { consulLock(t, proxy) })
	t.Run("Semaphore through the verifying proxy", func(t *testing.T) { consulSemaphore(t, proxy) })
}

// consulLock: two goroutines take one Consul Lock in turns: never both.
func consulLock(t *testing.T, addr string) {
	var holders, maxHolders atomic.Int32
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := consulClientAt(t, addr, rootToken).LockKey("election/leader")
			if err != nil {
				t.Error(err)
				return
			}
			for range 2 {
				lost, err := l.Lock(nil)
				if err != nil {
					t.Errorf("contender %d: lock: %v", i, err)
					return
				}
				n := holders.Add(1)
				for {
					m := maxHolders.Load()
					if n <= m || maxHolders.CompareAndSwap(m, n) {
						break
					}
				}
				select {
				case <-lost:
					t.Errorf("contender %d lost the lock", i)
				case <-time.After(500 * time.Millisecond):
				}
				holders.Add(-1)
				if err := l.Unlock(); err != nil {
					t.Errorf("contender %d: unlock: %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	if maxHolders.Load() != 1 {
		t.Errorf("at most %d holders at once, want 1", maxHolders.Load())
	}
}

// consulSemaphore: three contenders for a semaphore of 2: never more than
// two hold it.
func consulSemaphore(t *testing.T, addr string) {
	var holders, maxHolders, took atomic.Int32
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := consulClientAt(t, addr, rootToken).SemaphorePrefix("sema/", 2)
			if err != nil {
				t.Error(err)
				return
			}
			lost, err := s.Acquire(nil)
			if err != nil {
				t.Errorf("contender %d: acquire: %v", i, err)
				return
			}
			took.Add(1)
			n := holders.Add(1)
			for {
				m := maxHolders.Load()
				if n <= m || maxHolders.CompareAndSwap(m, n) {
					break
				}
			}
			select {
			case <-lost:
				t.Errorf("contender %d lost its slot", i)
			case <-time.After(time.Second):
			}
			holders.Add(-1)
			if err := s.Release(); err != nil {
				t.Errorf("contender %d: release: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if took.Load() != 3 || maxHolders.Load() > 2 {
		t.Errorf("%d took a slot, at most %d at once; want 3 and at most 2", took.Load(), maxHolders.Load())
	}
}

// TestKVQuota: on a real node whose genesis gives every operator two
// key/value keys, the team operator's third key is answered 429 with the
// quota's name, its limit, the usage and how to raise it, and is not
// stored; after a delete the same put succeeds.
func TestKVQuota(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startKVNode(ctx, t, func(as map[string]any) {
		as["quotas"] = map[string]any{"kv_keys": 2}
	})
	base := "http://" + tn.httpAddr + "/v1/kv/"
	for _, tc := range []struct {
		name, method, key string
		code              int
		want              []string // in the body
	}{
		{"first key", "PUT", "team/a", 200, []string{"true"}},
		{"second key", "PUT", "team/b", 200, []string{"true"}},
		{"past the quota", "PUT", "team/c", http.StatusTooManyRequests,
			[]string{"quota (code 12)", "operator team is over its kv_keys quota", "this would make 3", "the quota is 2 (now 2)", "delete keys it wrote", "quotas.kv_keys in the genesis"}},
		{"the refused put stored nothing", "GET", "team/c", 404, nil},
		{"an overwrite is no new key", "PUT", "team/b", 200, []string{"true"}},
		{"a delete frees a key", "DELETE", "team/a", 200, []string{"true"}},
		{"then the put fits", "PUT", "team/c", 200, []string{"true"}},
	} {
		code, body, _ := do(t, tc.method, base+tc.key, teamToken, []byte("value"))
		if code != tc.code {
			t.Fatalf("%s: %s %s answered %d %s, want %d", tc.name, tc.method, tc.key, code, body, tc.code)
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Fatalf("%s: %s %s answered %d %s, want it to say %q", tc.name, tc.method, tc.key, code, body, w)
			}
		}
	}
}
