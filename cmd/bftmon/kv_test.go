package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/node"
)

// runCLI runs the root command in-process with args and stdin, returning
// its output and error.
func runCLI(stdin string, args ...string) (string, error) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestKVCLI: bftmon kv put|get|cas|ls|delete|txn against a real one-node
// network, signing with --key, and the errors of a stale CAS and an
// unknown token.
func TestKVCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	httpAddr := testutil.FreeAddr(t)
	if err := node.Init(node.InitOptions{Home: home, ChainID: "kvcli", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + testutil.FreeAddr(t), P2PAddr: "tcp://" + testutil.FreeAddr(t), BlockInterval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(ctx, node.Config{Home: home, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	c := api.NewClient(httpAddr)
	testutil.WaitFor(t, "first block", 30*time.Second, func() (bool, error) {
		st, err := c.Status(ctx)
		return err == nil && st.Height >= 1, err
	})
	key := filepath.Join(home, node.OperatorKeyFile)
	kv := func(stdin string, args ...string) (string, error) {
		return runCLI(stdin, append(append([]string{"kv"}, args...), "--addr", httpAddr)...)
	}
	mustKV := func(stdin string, args ...string) string {
		t.Helper()
		out, err := kv(stdin, args...)
		if err != nil {
			t.Fatalf("kv %v: %v\n%s", args, err, out)
		}
		return out
	}
	mustKV("", "put", "app/a", "one", "--key", key)
	mustKV("two\n", "put", "app/b", "-", "--key", key)
	if out := mustKV("", "get", "app/a"); out != "one" {
		t.Errorf("get app/a: %q", out)
	}
	if out := mustKV("", "get", "app/b"); out != "two\n" {
		t.Errorf("get app/b (from stdin): %q", out)
	}
	if _, err := kv("", "cas", "app/a", "1", "x", "--key", key); err == nil || !strings.Contains(err.Error(), "current modify index is") {
		t.Errorf("stale cas: %v, want the current index named", err)
	}
	if _, err := kv("", "put", "app/a", "x", "--token", "no-such-token-here"); err == nil || !strings.Contains(err.Error(), "unknown token") {
		t.Errorf("unknown token: %v", err)
	}
	if out := mustKV("", "ls", "app/"); out != "app/a\napp/b\n" {
		t.Errorf("ls: %q", out)
	}
	mustKV(`[{"KV": {"Verb": "set", "Key": "app/c", "Value": "Yw=="}}, {"KV": {"Verb": "delete", "Key": "app/b"}}]`, "txn", "-", "--key", key)
	if out := mustKV("", "ls", "app/"); out != "app/a\napp/c\n" {
		t.Errorf("ls after txn: %q", out)
	}
	if _, err := kv(`[{"KV": {"Verb": "set", "Key": "app/d"}}, {"KV": {"Verb": "check-not-exists", "Key": "app/a"}}]`, "txn", "-", "--key", key); err == nil || !strings.Contains(err.Error(), "nothing applied") {
		t.Errorf("failing txn: %v", err)
	}
	mustKV("", "delete", "app/", "--recurse", "--key", key)
	if _, err := kv("", "get", "app/a"); err == nil || !strings.Contains(err.Error(), "no such key") {
		t.Errorf("get after delete: %v", err)
	}
}
