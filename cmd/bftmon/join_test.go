package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/node"
)

// rpcStatus reads latest and earliest block heights from CometBFT's /status.
func rpcStatus(ctx context.Context, rpc string) (latest, earliest int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rpc+"/status", nil)
	if err != nil {
		return 0, 0, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer res.Body.Close()
	var st struct {
		Result struct {
			SyncInfo struct {
				Latest   string `json:"latest_block_height"`
				Earliest string `json:"earliest_block_height"`
			} `json:"sync_info"`
		} `json:"result"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		return 0, 0, err
	}
	latest, _ = strconv.ParseInt(st.Result.SyncInfo.Latest, 10, 64)
	earliest, _ = strconv.ParseInt(st.Result.SyncInfo.Earliest, 10, 64)
	return latest, earliest, nil
}

// startProcess runs `bftmon start` on home until the test ends.
func startProcess(t *testing.T, bin, home string) *bytes.Buffer {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, "start", "--home", home)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("bftmon start --home %s:\n%s", home, out.String())
		}
	})
	return &out
}

// TestJoinCmd adds a node to a running network as the README says, with the
// real binary: init and start a network that prunes its early blocks, bftmon
// join through its RPC, bftmon start the printed home; the new node catches
// up. Join refuses the same home twice and an unreachable RPC.
func TestJoinCmd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := buildBinary(t)
	run := func(args ...string) (string, int) {
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	src := filepath.Join(t.TempDir(), "src")
	rpc := freeAddr(t)
	if out, code := run("init", "--home", src, "--http", freeAddr(t), "--rpc", "tcp://"+rpc, "--p2p", "tcp://"+freeAddr(t), "--dns", "", "--block-interval", "500ms"); code != 0 {
		t.Fatalf("init: exit %d\n%s", code, out)
	}
	st, err := node.ReadSettings(src)
	if err != nil {
		t.Fatal(err)
	}
	st.RetainBlocks, st.SnapshotInterval, st.KeepVersions = 20, 20, 50 // as node.TestJoinPrunedNetworkByStateSync, which says why
	if err := node.WriteSettings(src, st); err != nil {
		t.Fatal(err)
	}
	startProcess(t, bin, src)
	rpcURL := "http://" + rpc
	testutil.WaitFor(t, "block 1 pruned on the network", 90*time.Second, func() (bool, error) {
		_, earliest, err := rpcStatus(ctx, rpcURL)
		return err == nil && earliest > 1, err
	})

	if out, code := run("join", "--rpc", "http://"+freeAddr(t), "--home", filepath.Join(t.TempDir(), "x")); code != 1 || !strings.Contains(out, "is the node running") {
		t.Errorf("join through a dead RPC: exit %d\n%s", code, out)
	}
	home, httpAddr := filepath.Join(t.TempDir(), "new"), freeAddr(t)
	// The same node twice (two spellings) is one peer, one RPC server
	// given twice to CometBFT.
	out, code := run("join", "--rpc", rpcURL, "--rpc", rpc, "--home", home, "--http", httpAddr, "--dns", "",
		"--rpc-listen", "tcp://"+freeAddr(t), "--p2p", "tcp://"+freeAddr(t), "--discovery-time", "5s")
	if code != 0 {
		t.Fatalf("join: exit %d\n%s", code, out)
	}
	for _, w := range []string{"trust on first use", "trust_height", "start it with: bftmon start --home " + home, "With one --rpc"} {
		if !strings.Contains(out, w) {
			t.Errorf("join output lacks %q:\n%s", w, out)
		}
	}
	t.Logf("bftmon join:\n%s", out)
	if out, code := run("join", "--rpc", rpcURL, "--home", home); code != 1 || !strings.Contains(out, "already holds a node") {
		t.Errorf("join into the same home again: exit %d\n%s", code, out)
	}

	startProcess(t, bin, home)
	c := api.NewClient(httpAddr)
	testutil.WaitFor(t, "the joined node caught up", 90*time.Second, func() (bool, error) {
		latest, _, err := rpcStatus(ctx, rpcURL)
		if err != nil {
			return false, err
		}
		s, err := c.Status(ctx)
		if err != nil {
			return false, err
		}
		return s.Height >= latest-1, fmt.Errorf("joined node at %d, network at %d", s.Height, latest)
	})
}
