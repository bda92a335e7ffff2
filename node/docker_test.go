package node_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// TestTestnetDocker: --docker homes listen on 0.0.0.0 at the container
// ports, dial their peers (and tell them to dial back) at the given hosts,
// deliver to the webhook with the secret written beside them, and pass the
// node's own checks of its settings.
func TestTestnetDocker(t *testing.T) {
	out := t.TempDir()
	hosts := []string{"10.9.0.10", "10.9.0.11", "10.9.0.12", "10.9.0.13"}
	nodes, err := node.Testnet(node.TestnetOptions{Out: out, Nodes: 4, Datacenters: 2, Docker: true, Hosts: hosts, WebhookURL: "http://webhook:9000/hook"})
	if err != nil {
		t.Fatal(err)
	}
	if !node.TestnetExists(out) {
		t.Fatalf("TestnetExists(%s) = false after writing it", out)
	}
	secret, err := os.ReadFile(filepath.Join(out, node.WebhookSecretFile))
	if err != nil || !strings.HasPrefix(string(secret), "whsec_") {
		t.Fatalf("webhook secret: %q %v", secret, err)
	}
	for i, n := range nodes {
		if n.P2PAddr != hosts[i]+":26656" || n.HTTPAddr != hosts[i]+":8500" {
			t.Errorf("%s: P2P %s, HTTP %s: want the given host", n.Name, n.P2PAddr, n.HTTPAddr)
		}
		ccfg, err := node.LoadCometConfig(n.Home)
		if err != nil {
			t.Fatal(err)
		}
		if ccfg.P2P.ListenAddress != "tcp://0.0.0.0:26656" || ccfg.RPC.ListenAddress != "tcp://0.0.0.0:26657" {
			t.Errorf("%s listens on P2P %s, RPC %s: want 0.0.0.0", n.Name, ccfg.P2P.ListenAddress, ccfg.RPC.ListenAddress)
		}
		if ccfg.P2P.ExternalAddress != "tcp://"+hosts[i]+":26656" {
			t.Errorf("%s external address %q", n.Name, ccfg.P2P.ExternalAddress)
		}
		for j, h := range hosts {
			if has := strings.Contains(ccfg.P2P.PersistentPeers, "@"+h+":26656"); has == (i == j) {
				t.Errorf("%s persistent peers %q: peer %s listed %v", n.Name, ccfg.P2P.PersistentPeers, h, has)
			}
		}
		st, err := node.ReadSettings(n.Home)
		if err != nil {
			t.Fatal(err)
		}
		if st.HTTPAddr != "0.0.0.0:8500" || st.DNSAddr != "0.0.0.0:8600" {
			t.Errorf("%s settings listen on HTTP %s, DNS %s: want 0.0.0.0", n.Name, st.HTTPAddr, st.DNSAddr)
		}
		if len(st.Notify.Receivers) != 1 || st.Notify.Receivers[0].Secret != strings.TrimSpace(string(secret)) || st.Notify.Receivers[0].URL != "http://webhook:9000/hook" {
			t.Errorf("%s receivers %+v: want the webhook with the written secret", n.Name, st.Notify.Receivers)
		}
	}
	if _, err := node.Testnet(node.TestnetOptions{Out: t.TempDir(), Nodes: 4, Datacenters: 2, Docker: true, Hosts: hosts[:3]}); err == nil || !strings.Contains(err.Error(), "one per node") {
		t.Errorf("3 hosts for 4 nodes: %v, want one per node", err)
	}
}

// TestWaitPeerNames: a node waits until its peers' host names resolve
// (containers not started yet), saying which do not; addresses need no
// lookup; after the wait it starts anyway, with a warning.
func TestWaitPeerNames(t *testing.T) {
	var mu sync.Mutex
	tries := map[string]int{}
	restore := node.SetLookupHost(func(_ context.Context, host string) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		tries[host]++
		if host == "node2" && tries[host] < 3 { // starts a little later
			return nil, errors.New("no such host")
		}
		if host == "gone" {
			return nil, errors.New("no such host")
		}
		return []string{"10.0.0.2"}, nil
	})
	defer restore()
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	peers := []string{"id1@node1:26656", "id2@node2:26656", "id3@10.0.0.3:26656"}
	if err := node.WaitPeerNames(ctx, peers, time.Minute, log); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if tries["node2"] != 3 || tries["10.0.0.3"] != 0 {
		t.Errorf("lookups %v: want node2 until it resolves (3), no lookup of an address", tries)
	}
	mu.Unlock()
	if !strings.Contains(logs.String(), "waiting for peer host names to resolve") || !strings.Contains(logs.String(), "unresolved=node2") {
		t.Errorf("logs %q: want a progress line naming node2", logs.String())
	}

	// A name that never resolves: the node starts after the wait, warning.
	if err := node.WaitPeerNames(ctx, []string{"id@gone:26656"}, time.Second, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "starting without dialling them") || !strings.Contains(logs.String(), "unresolved=gone") {
		t.Errorf("logs %q: want a warning naming gone", logs.String())
	}
	if err := node.WaitPeerNames(ctx, []string{"nohost"}, time.Second, log); err == nil {
		t.Error("a peer without ID@HOST:PORT: no error")
	}
	// Cancelled: the wait ends with ctx.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if err := node.WaitPeerNames(cctx, []string{"id@gone:26656"}, time.Minute, log); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
}

// freeBasePort finds a base port whose 10n ports are free on 127.0.0.1 just
// now.
func freeBasePort(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		_, port, _ := net.SplitHostPort(testutil.FreeAddr(t))
		base, _ := strconv.Atoi(port)
		base -= base % 10
		if base < 1024 || base+10*n > 65000 {
			continue
		}
		free := true
		for p := base; p < base+10*n && free; p++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				free = false
				continue
			}
			l.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no run of free ports found")
	return 0
}

// TestRegisterWaitsForPeers: a node whose peer is not up yet keeps running,
// catching up, and refuses transactions with 503 and Retry-After, which a
// waiting client reports and retries; once the peer starts, the same
// registration goes through. (Issue 15: register right after the nodes
// start failed with "endpoint is closed while node is catching up".)
func TestRegisterWaitsForPeers(t *testing.T) {
	out := t.TempDir()
	nodes, err := node.Testnet(node.TestnetOptions{Out: out, Nodes: 2, Datacenters: 1, BasePort: freeBasePort(t, 2)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n0, err := node.Start(ctx, node.Config{Home: nodes[0].Home, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n0.Stop()
	op, err := keys.Load(filepath.Join(out, "operator_key.json"))
	if err != nil {
		t.Fatal(err)
	}
	inst := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Port: 1, Datacenter: "dc1",
		Checks: []types.Check{{Id: "tcp", Kind: "tcp", Tcp: &types.TCPParams{Address: "127.0.0.1:1"}, IntervalMs: 10000, TimeoutMs: 1000, TtlMs: 30000}}}

	var progress testutil.SyncBuffer
	_, err = api.NewClient(nodes[0].HTTPAddr).WithWait(time.Second, &progress).Register(ctx, op.Private, inst)
	if err == nil || !strings.Contains(err.Error(), "catching up") || !strings.Contains(err.Error(), "waited") {
		t.Fatalf("register with the only peer down, waiting 1s: %v, want a catching-up error after the wait", err)
	}
	if !strings.Contains(progress.String(), "the node is catching up (height 0, 0 of 1 peers connected)") {
		t.Errorf("progress %q: want the catching-up line", progress.String())
	}

	n1, err := node.Start(ctx, node.Config{Home: nodes[1].Home, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Stop()
	res, err := api.NewClient(nodes[0].HTTPAddr).WithWait(time.Minute, &progress).Register(ctx, op.Private, inst)
	if err != nil || res.Height == 0 {
		t.Fatalf("register once the peer is up: %+v %v", res, err)
	}
}
