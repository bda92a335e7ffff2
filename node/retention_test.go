package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/node"
)

// earliestHeight is the lowest block the node's block store still holds,
// from CometBFT's RPC /status.
func earliestHeight(ctx context.Context, rpcURL string) (int64, error) {
	u := strings.Replace(rpcURL, "tcp://", "http://", 1) + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var st struct {
		Result struct {
			SyncInfo struct {
				Earliest string `json:"earliest_block_height"`
			} `json:"sync_info"`
		} `json:"result"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return 0, fmt.Errorf("decode %s: %w", u, err)
	}
	return strconv.ParseInt(st.Result.SyncInfo.Earliest, 10, 64)
}

// TestRetentionPrunesBlocks: with retain_blocks 20 and a snapshot every 10
// heights, the block store's base rises, but never above the oldest
// snapshot, and no more than 2 snapshots are kept.
func TestRetentionPrunesBlocks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home, httpAddr := t.TempDir(), freeAddr(t)
	if err := node.Init(node.InitOptions{
		Home: home, ChainID: "retention", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	st, err := node.ReadSettings(home)
	if err != nil {
		t.Fatal(err)
	}
	st.RetainBlocks, st.SnapshotInterval, st.KeepVersions = 20, 10, 50
	bz, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(filepath.Join(home, node.SettingsFile), bz, 0o644); err != nil {
		t.Fatal(err)
	}
	tn := startNodeAt(ctx, t, home, httpAddr)
	defer tn.node.Stop()

	var base int64
	waitFor(t, "block store base above 10", 90*time.Second, func() (bool, error) {
		var err error
		base, err = earliestHeight(ctx, tn.node.RPCURL())
		return err == nil && base > 10, err
	})
	if h := tn.node.Height(); base > h-20 {
		t.Errorf("block store base %d at height %d: more than the last 20 blocks pruned", base, h)
	}
	ents, err := os.ReadDir(filepath.Join(home, node.SnapshotDir))
	if err != nil {
		t.Fatal(err)
	}
	var snaps []string
	oldest := int64(-1)
	for _, e := range ents {
		if h, err := strconv.ParseInt(e.Name(), 10, 64); err == nil {
			snaps = append(snaps, e.Name())
			if oldest < 0 || h < oldest {
				oldest = h
			}
		}
	}
	if len(snaps) == 0 || len(snaps) > 2 {
		t.Errorf("snapshots %v, want 1 or 2", snaps)
	}
	// A syncing node gets a snapshot it was offered and the blocks after it.
	if base > oldest {
		t.Errorf("block store base %d above the oldest snapshot served %d", base, oldest)
	}
}
