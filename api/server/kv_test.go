package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
)

// TestKVBlockingQuery: a blocking read of a key wakes on a block that
// wrote that key, not on one that wrote another; one of a missing key
// wakes when it is created; one of a prefix when a recursive delete
// overlaps it.
func TestKVBlockingQuery(t *testing.T) {
	n := newReadNet(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set := func(k, v string) api.TxResult {
		return n.send("root", types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: k, Value: []byte(v)}}})
	}
	type result struct {
		p   *api.KVPair
		err error
	}
	block := func(key string) chan result {
		_, meta, err := n.c.KVGet(ctx, key, nil)
		if err != nil || meta.Index < 1 {
			t.Fatalf("get %s: index %d, %v", key, meta.Index, err)
		}
		done := make(chan result, 1)
		go func() {
			p, _, err := n.c.KVGet(ctx, key, &api.KVOptions{WaitIndex: meta.Index, WaitTime: time.Minute})
			done <- result{p, err}
		}()
		waitFor(t, "the query on "+key+" to block", func() bool { return n.srv.Parked() == 1 })
		return done
	}

	done := block("cfg/a")
	set("cfg/b", "other")
	set("cfgx", "other")
	select {
	case r := <-done:
		t.Fatalf("woken by another key: %+v %v", r.p, r.err)
	default:
	}
	set("cfg/a", "new")
	if r := <-done; r.err != nil || r.p == nil || string(r.p.Value) != "new" {
		t.Fatalf("after the write: %+v %v", r.p, r.err)
	}

	done = block("later/k")
	set("later/k", "here")
	if r := <-done; r.err != nil || r.p == nil || string(r.p.Value) != "here" {
		t.Fatalf("a missing key's query: %+v %v", r.p, r.err)
	}

	_, meta, err := n.c.KVList(ctx, "cfg/", nil)
	if err != nil {
		t.Fatal(err)
	}
	tree := make(chan error, 1)
	go func() {
		list, _, err := n.c.KVList(ctx, "cfg/", &api.KVOptions{WaitIndex: meta.Index, WaitTime: time.Minute})
		if err == nil && len(list) != 3 { // cfg/a, cfg/b, cfg/lock: cfg/sub/c went
			t.Errorf("tree after the delete: %d entries", len(list))
		}
		tree <- err
	}()
	waitFor(t, "the tree query to block", func() bool { return n.srv.Parked() == 1 })
	n.send("root", types.Msg{Sum: &types.Msg_KvDelete{KvDelete: &types.KVDelete{Key: "cfg/sub/", Recurse: true}}})
	if err := <-tree; err != nil {
		t.Fatal(err)
	}
}
