package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// defaultHome is $BFTMON_HOME, or ~/.bftmon.
func defaultHome() string {
	if h := os.Getenv("BFTMON_HOME"); h != "" {
		return h
	}
	if u, err := os.UserHomeDir(); err == nil {
		return filepath.Join(u, ".bftmon")
	}
	return ".bftmon"
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func newInitCmd() *cobra.Command {
	var opts node.InitOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the home of a one-node network (validator, observer, operator key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := node.Init(opts); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "initialised %s (chain %s, datacenter %s)\nstart it with: bftmon start --home %s\n",
				opts.Home, opts.ChainID, opts.Datacenter, opts.Home)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Home, "home", defaultHome(), "node home directory")
	f.StringVar(&opts.ChainID, "chain-id", "bftmon-dev", "chain id")
	f.StringVar(&opts.Datacenter, "datacenter", "dc1", "this node's observer datacenter")
	f.StringVar(&opts.Moniker, "moniker", "node0", "node and observer name")
	f.StringVar(&opts.HTTPAddr, "http", "127.0.0.1:8500", "HTTP API listen address")
	f.StringVar(&opts.DNSAddr, "dns", node.DefaultDNSAddr, "DNS interface listen address, UDP and TCP ('' for none)")
	f.StringVar(&opts.RPCAddr, "rpc", "tcp://127.0.0.1:26657", "CometBFT RPC listen address")
	f.StringVar(&opts.P2PAddr, "p2p", "tcp://127.0.0.1:26656", "CometBFT P2P listen address")
	f.DurationVar(&opts.BlockInterval, "block-interval", 0, "if set, a steady block every this long (consensus timeout_commit, empty blocks included); default: the --network profile, a block as soon as a transaction waits and one a second when idle")
	f.StringVar(&opts.Network, "network", node.NetworkLAN, "consensus profile: lan (validators on one machine or in one datacenter) or wan (datacenters far apart: CometBFT's longer timeouts)")
	return cmd
}

func newStartCmd() *cobra.Command {
	var home, httpAddr, dnsAddr, level, byz string
	var faults bool
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run a node from its home until interrupted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(level)
			if err != nil {
				return err
			}
			modes, err := node.ParseByzantine(byz)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg := node.Config{Home: home, HTTPAddr: httpAddr, Logger: logger, Byzantine: modes, FaultInjection: faults}
			if cmd.Flags().Changed("dns") {
				cfg.DNSAddr, cfg.NoDNS = dnsAddr, dnsAddr == ""
			}
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			return waitNode(ctx, n)
		},
	}
	cmd.Flags().StringVar(&home, "home", defaultHome(), "node home directory")
	cmd.Flags().StringVar(&httpAddr, "http", "", "HTTP API listen address (default: the home's config/bftmon.json)")
	cmd.Flags().StringVar(&dnsAddr, "dns", "", "DNS interface listen address, UDP and TCP (default: the home's config/bftmon.json; --dns '' for none)")
	cmd.Flags().StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	// Test-only flags, hidden from help (docs/TESTING.md).
	cmd.Flags().StringVar(&byz, "byzantine", os.Getenv("BFTMON_BYZANTINE"), "make this node (its observer, its proposals or its HTTP API) misbehave on purpose (env BFTMON_BYZANTINE): "+strings.Join(node.ByzantineModes, ", "))
	cmd.Flags().BoolVar(&faults, "fault-injection", false, "serve /v1/debug/unreachable, to tell the observer which targets it cannot reach")
	_ = cmd.Flags().MarkHidden("byzantine")
	_ = cmd.Flags().MarkHidden("fault-injection")
	return cmd
}

func newTestnetCmd() *cobra.Command {
	var opts node.TestnetOptions
	var keep bool
	cmd := &cobra.Command{
		Use:   "testnet --nodes N --dcs D --out DIR",
		Short: "Write the homes of an N-node network on this machine (validators, observers over D datacenters, one genesis)",
		Long: `Write node0 … node<N-1> under DIR with one genesis: N validators and N
observers of weight 1 spread over D datacenters (contiguous runs: with 4 nodes
and 2 datacenters, node0 and node1 are in dc1), an operator key allowed every
service (DIR/operator_key.json, also in each home), persistent peers, and
ports on 127.0.0.1: node K uses BASE+10K for P2P, +1 for RPC, +2 for the HTTP
API, +3 for DNS. Consensus timeouts suit loopback (docs/TESTING.md). Run each node with
'bftmon start --home DIR/nodeK'.

With --docker the homes are for containers named node0 … node<N-1> sharing a
container network (docker-compose.yml): every node listens on 0.0.0.0 at
26656 (P2P), 26657 (RPC), 8500 (HTTP API) and 8600 (DNS), and dials its peers
by container name, or at the addresses --hosts gives (docker-compose.yml
gives the nodes fixed addresses: they stay the same across restarts and
'docker network disconnect/connect'). --webhook URL adds a signed native receiver "webhook" to
every node, its secret in DIR/webhook_secret. --keep-existing makes a DIR that
holds a testnet already a success, unchanged (a compose one-shot runs this at
every 'up').`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if keep && node.TestnetExists(opts.Out) {
				fmt.Fprintf(w, "%s holds a testnet already: kept as it is (remove it to start afresh)\n", opts.Out)
				return nil
			}
			nodes, err := node.Testnet(opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "wrote %d nodes in %s (chain %s, operator key %s):\n", len(nodes), opts.Out, orDefaultStr(opts.ChainID, "bftmon-testnet"), filepath.Join(opts.Out, "operator_key.json"))
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tDATACENTER\tHTTP API\tRPC\tP2P\tDNS")
			for _, n := range nodes {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Datacenter, n.HTTPAddr, n.RPCAddr, n.P2PAddr, n.DNSAddr)
			}
			tw.Flush()
			fmt.Fprintf(w, "start each with: bftmon start --home %s\n", filepath.Join(opts.Out, "nodeK"))
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opts.Nodes, "nodes", 4, "number of nodes (validator + observer each)")
	f.IntVar(&opts.Datacenters, "dcs", 2, "number of datacenters the observers are spread over")
	f.StringVar(&opts.Out, "out", "", "directory to write the node homes into (required)")
	f.IntVar(&opts.BasePort, "base-port", 27000, "first port; node K uses BASE+10K .. BASE+10K+3")
	f.StringVar(&opts.ChainID, "chain-id", "bftmon-testnet", "chain id")
	f.BoolVar(&opts.Docker, "docker", false, "write the homes for containers named nodeK on one network (listen on 0.0.0.0, peers by name)")
	f.StringSliceVar(&opts.Hosts, "hosts", nil, "with --docker: the addresses the nodes reach node0 … nodeN-1 at, comma-separated (default: their names)")
	f.StringVar(&opts.WebhookURL, "webhook", "", "add a signed native webhook receiver with this URL to every node (secret in DIR/webhook_secret)")
	f.BoolVar(&keep, "keep-existing", false, "if DIR holds a testnet already, keep it and succeed")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func newDevCmd() *cobra.Command {
	var home, httpAddr, dnsAddr, demoAddr, rpcAddr, p2pAddr, level string
	var reset bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a whole one-node network with a demo service",
		Long: `dev sets up (once) and runs a one-validator, one-observer network with you as
the operator, serves a demo HTTP endpoint, registers a demo service that checks
it, and prints where to look. Ctrl-C stops it; running it again resumes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(level)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDev(ctx, cmd, devOptions{home: home, httpAddr: httpAddr, dnsAddr: dnsAddr, demoAddr: demoAddr, rpcAddr: rpcAddr, p2pAddr: p2pAddr, reset: reset, logger: logger})
		},
	}
	f := cmd.Flags()
	f.StringVar(&home, "home", defaultHome(), "home directory of the dev network")
	f.StringVar(&httpAddr, "http", "127.0.0.1:8500", "HTTP API listen address")
	f.StringVar(&dnsAddr, "dns", node.DefaultDNSAddr, "DNS interface listen address, UDP and TCP ('' for none)")
	f.StringVar(&demoAddr, "demo-addr", "127.0.0.1:8501", "listen address of the demo service")
	f.StringVar(&rpcAddr, "rpc", "tcp://127.0.0.1:26657", "CometBFT RPC listen address (used when the network is created)")
	f.StringVar(&p2pAddr, "p2p", "tcp://127.0.0.1:26656", "CometBFT P2P listen address (used when the network is created)")
	f.BoolVar(&reset, "reset", false, "delete the dev network's state and start afresh")
	f.StringVar(&level, "log-level", "warn", "log level: debug, info, warn, error")
	return cmd
}

type devOptions struct {
	home, httpAddr, demoAddr string
	dnsAddr                  string
	rpcAddr, p2pAddr         string
	reset                    bool
	logger                   *slog.Logger
}

func runDev(ctx context.Context, cmd *cobra.Command, o devOptions) error {
	out := cmd.OutOrStdout()
	start := time.Now()
	if o.reset {
		if err := os.RemoveAll(o.home); err != nil {
			return fmt.Errorf("reset %s: %w", o.home, err)
		}
		fmt.Fprintf(out, "reset: removed %s\n", o.home)
	}
	if !node.Initialized(o.home) {
		if err := node.Init(node.InitOptions{Home: o.home, ChainID: "bftmon-dev", HTTPAddr: o.httpAddr, DNSAddr: o.dnsAddr, RPCAddr: o.rpcAddr, P2PAddr: o.p2pAddr}); err != nil {
			return err
		}
		fmt.Fprintf(out, "created a one-node network in %s\n", o.home)
	} else {
		fmt.Fprintf(out, "resuming the network in %s\n", o.home)
	}

	demo, err := startDemo(o.demoAddr)
	if err != nil {
		return err
	}
	defer demo.Close()

	n, err := node.Start(ctx, node.Config{Home: o.home, HTTPAddr: o.httpAddr, DNSAddr: o.dnsAddr, NoDNS: o.dnsAddr == "", Logger: o.logger})
	if err != nil {
		return err
	}
	defer n.Stop()

	op, err := keys.Load(filepath.Join(o.home, node.OperatorKeyFile))
	if err != nil {
		return err
	}
	client := api.NewClient(n.HTTPAddr())
	inst := demoInstance(demo.addr)
	regCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	res, err := client.Register(regCtx, op.Private, inst)
	cancel()
	if err != nil {
		return fmt.Errorf("register the demo service: %w", err)
	}
	fmt.Fprintf(out, "registered demo service %s/%s at height %d; waiting for the observers to agree...\n", inst.Name, inst.Id, res.Height)

	height, err := waitPassing(ctx, client, inst.Name, res.Height)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	self, _ := os.Executable()
	bin := "bftmon"
	if strings.Contains(self, "go-build") {
		bin = "go run ./cmd/bftmon"
	}
	env := ""
	if o.home != defaultHome() {
		env = "BFTMON_HOME=" + o.home + " "
	}
	if o.httpAddr != "127.0.0.1:8500" {
		env += "BFTMON_ADDR=" + n.HTTPAddr() + " "
	}
	dnsLine, digLine := devDNS(n.DNSAddr(), inst.Name)
	fmt.Fprintf(out, `
demo is passing, agreed at height %d, %.1fs after start.

  HTTP API      http://%[3]s/v1/services
                http://%[3]s/v1/services/demo
                http://%[3]s/v1/status
  demo service  http://%[4]s/health   (POST /down to break it, /up to heal it)
%[8]s  CometBFT RPC  %[7]s/status

Try:
  %[5]s%[6]s service list
  %[5]s%[6]s health demo
%[9]s  curl -X POST http://%[4]s/down   # then 'health demo' turns critical within seconds

Ctrl-C stops the network; 'bftmon dev' again resumes it.
`, height, time.Since(start).Seconds(), n.HTTPAddr(), demo.addr, env, bin, n.RPCURL(), dnsLine, digLine)
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nstopping...")
		return n.Stop()
	case <-n.Failed():
		n.Stop()
		return fmt.Errorf("stopped: %w", n.Failure())
	}
}

// waitNode runs n until ctx ends (SIGINT, SIGTERM) or it can commit no more
// (a full disk, say): then it stops n and returns why, so the process exits
// non-zero instead of serving an old state.
func waitNode(ctx context.Context, n *node.Node) error {
	select {
	case <-ctx.Done():
		return n.Stop()
	case <-n.Failed():
		n.Stop()
		return fmt.Errorf("stopped: %w", n.Failure())
	}
}

// devDNS is what dev prints about the DNS interface at addr ("" for none):
// where it listens, and a dig command asking it for service.
func devDNS(addr, service string) (where, try string) {
	if addr == "" {
		return "", ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", ""
	}
	name := service + ".service.bftmon"
	where = fmt.Sprintf("  DNS           %s   (%s: A, AAAA, SRV; udp and tcp)\n", addr, name)
	try = fmt.Sprintf("  dig @%s -p %s %s SRV\n", host, port, name)
	return where, try
}

// demoInstance is the demo service: one http check of the demo endpoint.
func demoInstance(addr string) types.ServiceInstance {
	host, port, _ := net.SplitHostPort(addr)
	var p uint32
	fmt.Sscan(port, &p)
	return types.ServiceInstance{
		Name: "demo", Id: "demo-1", Address: host, Port: p, Datacenter: "dc1",
		Tags: []string{"demo"}, Meta: []types.Pair{{Key: "version", Value: "1.0.0"}},
		Checks: []types.Check{{
			Id: "http", Kind: "http",
			Http:       &types.HTTPParams{Url: "http://" + addr + "/health", Method: "GET", ExpectStatus: []uint32{200}},
			IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000,
		}},
	}
}

// waitPassing waits until the service's first instance is agreed passing
// with a passing report committed at or after height since, and returns the
// height of that report.
func waitPassing(ctx context.Context, c *api.Client, name string, since int64) (int64, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		insts, _, err := c.Service(ctx, name, nil)
		if err == nil && len(insts) > 0 && insts[0].Status == "passing" && len(insts[0].Checks) > 0 && insts[0].Checks[0].Status == "passing" {
			// On a resumed chain the check kept its old agreed state: wait
			// for a passing report committed since the registration, and
			// say where it is, not where the state was first agreed.
			for _, o := range insts[0].Checks[0].Observers {
				if o.Fresh && o.Status == "passing" && o.Height >= since {
					return o.Height, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the demo service did not become passing within 60s (last error: %v); run with --log-level debug to see why", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// demoServer is the endpoint the demo service's check probes.
type demoServer struct {
	addr string
	srv  *http.Server
}

func startDemo(addr string) (*demoServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("demo service: listen on %s: %w (choose another with --demo-addr)", addr, err)
	}
	var down atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "demo is down (POST /up to heal it)", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, _ *http.Request) {
		down.Store(true)
		fmt.Fprintln(w, "demo is now failing its health check")
	})
	mux.HandleFunc("POST /up", func(w http.ResponseWriter, _ *http.Request) {
		down.Store(false)
		fmt.Fprintln(w, "demo is healthy again")
	})
	d := &demoServer{addr: ln.Addr().String(), srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := d.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("demo service stopped", "err", err)
		}
	}()
	return d, nil
}

func (d *demoServer) Close() error { return d.srv.Close() }
