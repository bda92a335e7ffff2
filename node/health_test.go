package node

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/internal/testutil"
)

func initHome(t *testing.T) (home, httpAddr string) {
	t.Helper()
	home, httpAddr = t.TempDir(), testutil.FreeAddr(t)
	if err := Init(InitOptions{
		Home: home, ChainID: "health-chain", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + testutil.FreeAddr(t), P2PAddr: "tcp://" + testutil.FreeAddr(t), BlockInterval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	return home, httpAddr
}

// TestStartRefusesAFullDisk: below MinFreeDisk free, the node does not
// start, and says how much it needs where.
func TestStartRefusesAFullDisk(t *testing.T) {
	home, _ := initHome(t)
	old := diskFree
	t.Cleanup(func() { diskFree = old })
	diskFree = func(string) (uint64, uint64, error) { return 100 << 20, 10 << 30, nil }
	_, err := Start(context.Background(), Config{Home: home, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "only 100.0 MiB of 10.0 GiB free") || !strings.Contains(err.Error(), "at least 256.0 MiB") || !strings.Contains(err.Error(), home) {
		t.Fatalf("start with 100 MiB free: %v", err)
	}
}

// TestConsensusFailureIsSaidEverywhere: when CometBFT reports that
// consensus failed (what a full disk makes it do), the node says so on
// GET /v1/status (503, naming the disk and its free space) and through
// Failed, which bftmon start turns into a non-zero exit.
func TestConsensusFailureIsSaidEverywhere(t *testing.T) {
	home, httpAddr := initHome(t)
	n, err := Start(context.Background(), Config{Home: home, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	c := api.NewClient(httpAddr)
	testutil.WaitFor(t, "first block", 30*time.Second, func() (bool, error) {
		st, err := c.Status(context.Background())
		return err == nil && st.Height >= 1 && st.Committing, err
	})
	select {
	case <-n.Failed():
		t.Fatal("failed before any failure")
	default:
	}
	// What CometBFT logs when a write of its fails (consensus/state.go).
	logger := newCometLogger(slog.New(slog.DiscardHandler), &n.stopping, n.health.consensusFailed)
	logger.Error("CONSENSUS FAILURE!!!", "err", "write "+filepath.Join(home, "data", "blockstore.db")+": no space left on device\nstack...")
	select {
	case <-n.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed not closed")
	}
	for _, want := range []string{"consensus failed after height", "no space left on device", "the disk of " + filepath.Join(home, "data"), "free)"} {
		if err := n.Failure(); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("failure %v does not say %q", err, want)
		}
	}
	_, err = c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 503") || !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("status of a failed node: %v", err)
	}
}
