package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/node"
)

// initTxIndexHome initialises a one-node home whose tx index keeps the
// last retain heights, and returns it with its HTTP address.
func initTxIndexHome(t *testing.T, retain int64) (home, httpAddr string) {
	t.Helper()
	home, httpAddr = t.TempDir(), freeAddr(t)
	if err := node.Init(node.InitOptions{
		Home: home, ChainID: "txindex", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	st, err := node.ReadSettings(home)
	if err != nil {
		t.Fatal(err)
	}
	st.TxIndexRetainBlocks = retain
	bz, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(home, node.SettingsFile), bz, 0o600); err != nil {
		t.Fatal(err)
	}
	return home, httpAddr
}

// register commits a registration of web/<id> and returns its result.
func register(ctx context.Context, t *testing.T, tn testNode, id string) api.TxResult {
	t.Helper()
	res, err := tn.client.Register(ctx, tn.operator.Private, types.ServiceInstance{Name: "web", Id: id, Address: "127.0.0.1", Port: 80, Datacenter: "dc1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Height < 1 || len(res.Hash) != 64 {
		t.Fatalf("register %s: %+v, want a committed height and a hash", id, res)
	}
	return res
}

// findTx fails t unless GET /v1/txs/{hash} answers res's height and code.
func findTx(ctx context.Context, t *testing.T, c *api.Client, res api.TxResult) {
	t.Helper()
	got, err := c.Tx(ctx, res.Hash)
	if err != nil {
		t.Fatalf("GET /v1/txs/%s: %v", res.Hash, err)
	}
	if got.Hash != res.Hash || got.Height != res.Height || got.Code != res.Code {
		t.Fatalf("GET /v1/txs/%s: %+v, want %+v", res.Hash, got, res)
	}
}

// span is the heights a 404 of GET /v1/txs/{hash} says the node indexes.
var span = regexp.MustCompile(`in the last (\d+) heights this node indexes \((\d+) to (\d+); tx_index_retain_blocks (\d+)\)`)

// TestTxIndexPrunesOldTxs: a real node finds committed transactions by
// hash over HTTP from its own index; with tx_index_retain_blocks 10 an old
// one is pruned (404 saying what the node indexes) while a recent one
// stays, and CometBFT's data/tx_index.db is never created.
func TestTxIndexPrunesOldTxs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home, httpAddr := initTxIndexHome(t, 10)
	tn := startNodeAt(ctx, t, home, httpAddr)
	defer tn.node.Stop()

	old := register(ctx, t, tn, "web-1")
	findTx(ctx, t, tn.client, old)
	if _, err := tn.client.Tx(ctx, strings.Repeat("AB", 32)); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("GET /v1/txs of an unknown hash: %v, want not found", err)
	}

	var notFound error
	waitFor(t, "the old tx pruned", 60*time.Second, func() (bool, error) {
		_, err := tn.client.Tx(ctx, old.Hash)
		if err == nil {
			return false, nil
		}
		notFound = err
		return errors.Is(err, api.ErrNotFound), err
	})
	m := span.FindStringSubmatch(notFound.Error())
	if m == nil || !strings.Contains(notFound.Error(), old.Hash) {
		t.Fatalf("404 %q does not say which heights the node indexes and which tx", notFound)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	from, _ := strconv.ParseInt(m[2], 10, 64)
	last, _ := strconv.ParseInt(m[3], 10, 64)
	if n != 10 || last-from+1 != 10 || m[4] != "10" || from <= old.Height {
		t.Errorf("404 %q: want the last 10 heights, above the tx's height %d", notFound, old.Height)
	}

	recent := register(ctx, t, tn, "web-2")
	findTx(ctx, t, tn.client, recent)

	if _, err := os.Stat(filepath.Join(home, node.CometTxIndexDB)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: %v, want it not created", node.CometTxIndexDB, err)
	}
	if _, err := os.Stat(filepath.Join(home, node.TxIndexDB)); err != nil {
		t.Errorf("the node's own tx index: %v", err)
	}
}

// TestTxIndexSurvivesRestart: a tx found before a restart is found after
// it; a home that still says indexer = "kv" and holds an old
// data/tx_index.db gets neither written (the start says it can be
// deleted, with its size); and an index lost while the node was down (as
// a crash between the app's commit and the index's write leaves some
// heights out) is filled again from the block store on start.
func TestTxIndexSurvivesRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home, httpAddr := initTxIndexHome(t, 0)
	cfg, err := os.ReadFile(filepath.Join(home, "config", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^indexer = "null"$`).Match(cfg) {
		t.Fatalf("config.toml of a new home does not turn CometBFT's indexer off")
	}
	tn := startNodeAt(ctx, t, home, httpAddr)
	res := register(ctx, t, tn, "web-1")
	findTx(ctx, t, tn.client, res)
	if err := tn.node.Stop(); err != nil {
		t.Fatal(err)
	}

	tn = startNodeAt(ctx, t, home, httpAddr)
	findTx(ctx, t, tn.client, res)
	later := register(ctx, t, tn, "web-2")
	if err := tn.node.Stop(); err != nil {
		t.Fatal(err)
	}

	// An older home: CometBFT's kv indexer configured, its database
	// there; bftmon's own index gone.
	cfg, err = os.ReadFile(filepath.Join(home, "config", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg = regexp.MustCompile(`(?m)^indexer = "null"$`).ReplaceAll(cfg, []byte(`indexer = "kv"`))
	if err := os.WriteFile(filepath.Join(home, "config", "config.toml"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	oldDB := filepath.Join(home, node.CometTxIndexDB)
	if err := os.MkdirAll(oldDB, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(oldDB, "000001.ldb"), make([]byte, 1234), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(home, node.TxIndexDB)); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	n, err := node.Start(ctx, node.Config{Home: home, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	c := api.NewClient(httpAddr)
	waitFor(t, "both txs found again", 30*time.Second, func() (bool, error) {
		for _, r := range []api.TxResult{res, later} {
			got, err := c.Tx(ctx, r.Hash)
			if err != nil {
				return false, err
			}
			if got.Height != r.Height || got.Code != r.Code {
				return false, fmt.Errorf("tx %s: %+v, want %+v", r.Hash, got, r)
			}
		}
		return true, nil
	})
	if !strings.Contains(logs.String(), "tx index: filled the heights it missed") {
		t.Errorf("the start did not log the heights it filled:\n%s", logs.String())
	}
	if want := "data/tx_index.db is no longer used"; !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), "bytes=1234") {
		t.Errorf("the start did not say %q with its size:\n%s", want, logs.String())
	}
	ents, err := os.ReadDir(oldDB)
	if err != nil || len(ents) != 1 {
		t.Errorf("old %s written to: %v %v", node.CometTxIndexDB, ents, err)
	}
}
