package verify_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// testNet is a real one-node network.
type testNet struct {
	node     *node.Node
	home     string
	httpAddr string
	client   *api.Client
	operator keys.Key
}

// genesisFile is the path of the network's genesis file.
func (n *testNet) genesisFile() string { return filepath.Join(n.home, "config", "genesis.json") }

// genesis reads the network's genesis document.
func (n *testNet) genesis(t testing.TB) *cmttypes.GenesisDoc {
	t.Helper()
	g, err := cmttypes.GenesisDocFromFile(n.genesisFile())
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startNet initialises and starts a one-node network and waits until it
// has committed height 3. It stops with the test.
func startNet(t testing.TB) *testNet {
	t.Helper()
	home, httpAddr := t.TempDir(), testutil.FreeAddr(t)
	if err := node.Init(node.InitOptions{
		Home: home, ChainID: "verify-chain", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + testutil.FreeAddr(t), P2PAddr: "tcp://" + testutil.FreeAddr(t), BlockInterval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := node.Start(ctx, node.Config{Home: home, Logger: testLogger(), NoDNS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Stop() })
	tn := &testNet{node: n, home: home, httpAddr: httpAddr, client: api.NewClient(httpAddr)}
	if tn.operator, err = keys.Load(filepath.Join(home, node.OperatorKeyFile)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "height 3", 30*time.Second, func() (bool, error) {
		return n.Height() >= 3, nil
	})
	return tn
}

// tamperRPC is a CometBFT RPC in front of a real one that forges the
// commit signatures of the headers at heights from on (an atomic so a
// test can move it).
type tamperRPC struct {
	*httptest.Server
	from     atomic.Int64
	tampered atomic.Int64 // commits forged so far
	down     atomic.Bool  // refuse every request (a node restarting)
}

// newTamperRPC serves upstream's RPC, forging commit signatures from
// height from on.
func newTamperRPC(t testing.TB, upstream string, from int64) *tamperRPC {
	tr := &tamperRPC{}
	tr.from.Store(from)
	tr.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if tr.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		resp, err := http.Post(upstream, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		var req struct {
			Method string `json:"method"`
		}
		if json.Unmarshal(body, &req) == nil && req.Method == "commit" {
			out = tr.forge(t, out)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		w.Write(out)
	}))
	t.Cleanup(tr.Close)
	return tr
}

// forge flips a bit of every signature of a /commit answer at or above
// the forging height.
func (tr *tamperRPC) forge(t testing.TB, out []byte) []byte {
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		return out
	}
	res, _ := m["result"].(map[string]any)
	sh, _ := res["signed_header"].(map[string]any)
	hdr, _ := sh["header"].(map[string]any)
	commit, _ := sh["commit"].(map[string]any)
	if hdr == nil || commit == nil {
		return out
	}
	h, _ := strconv.ParseInt(fmt.Sprint(hdr["height"]), 10, 64)
	if h < tr.from.Load() {
		return out
	}
	sigs, _ := commit["signatures"].([]any)
	for _, s := range sigs {
		sig, _ := s.(map[string]any)
		b, err := base64.StdEncoding.DecodeString(fmt.Sprint(sig["signature"]))
		if err != nil || len(b) == 0 {
			continue
		}
		b[0] ^= 1
		sig["signature"] = base64.StdEncoding.EncodeToString(b)
	}
	tr.tampered.Add(1)
	forged, err := json.Marshal(m)
	if err != nil {
		t.Errorf("forge commit: %v", err)
		return out
	}
	return forged
}
