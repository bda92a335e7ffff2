package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	cmttypes "github.com/cometbft/cometbft/types"
	"github.com/spf13/cobra"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/internal/jsonconf"
	"github.com/bftmon/bftmon/verify"
)

// ClientConfigFile is where, under the home, the client commands' defaults
// for verification are.
const ClientConfigFile = "config/client.json"

// clientConfig is config/client.json: the defaults of --verify and the
// trust flags.
type clientConfig struct {
	Verify      bool     `json:"verify"`
	RPC         []string `json:"rpc"`
	Genesis     string   `json:"genesis"`
	TrustHeight int64    `json:"trust_height"`
	TrustHash   string   `json:"trust_hash"`
	TrustPeriod string   `json:"trust_period"`
	MaxAge      string   `json:"max_age"`
}

// verifyFlags are --verify and the trust flags of the read commands and
// the proxy.
type verifyFlags struct {
	on          bool
	rpc         []string
	genesis     string
	trustHeight int64
	trustHash   string
	trustPeriod time.Duration
	maxAge      time.Duration
	cmd         *cobra.Command
}

// add adds the trust flags to cmd, and --verify when withSwitch.
func (v *verifyFlags) add(cmd *cobra.Command, withSwitch bool) {
	v.cmd = cmd
	fl := cmd.Flags()
	if withSwitch {
		fl.BoolVar(&v.on, "verify", false, "accept only answers proven against block headers signed by the validators (default from $BFTMON_HOME/"+ClientConfigFile+")")
	}
	fl.StringArrayVar(&v.rpc, "rpc", nil, "CometBFT RPC URL to get signed headers from (repeatable: the first is the primary, the others witnesses; default the node's own, from its /v1/status)")
	fl.StringVar(&v.genesis, "genesis", "", "trust root: a genesis file you trust (default $BFTMON_HOME/config/genesis.json, unless --trust-height is given)")
	fl.Int64Var(&v.trustHeight, "trust-height", 0, "trust root: the height of a block you trust (with --trust-hash)")
	fl.StringVar(&v.trustHash, "trust-hash", "", "trust root: the hash (hex) of the block at --trust-height, from a source you trust")
	fl.DurationVar(&v.trustPeriod, "trust-period", verify.DefaultTrustPeriod, "how long a verified header serves to verify later ones")
	fl.DurationVar(&v.maxAge, "max-age", verify.DefaultMaxAge, "refuse answers whose header is older than this (stale)")
}

// loadClientConfig reads $BFTMON_HOME/config/client.json; a missing file
// is no defaults.
func loadClientConfig() (clientConfig, string, jsonconf.Positions, error) {
	var cfg clientConfig
	file := filepath.Join(defaultHome(), ClientConfigFile)
	raw, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, file, nil, nil
	}
	if err != nil {
		return cfg, file, nil, fmt.Errorf("client settings: %w", err)
	}
	pos, err := jsonconf.Decode(file, raw, &cfg)
	return cfg, file, pos, err
}

// merge applies client.json's defaults to the flags not given.
func (v *verifyFlags) merge() error {
	cfg, file, pos, err := loadClientConfig()
	if err != nil {
		return err
	}
	changed := func(name string) bool { return v.cmd.Flags().Changed(name) }
	if !changed("verify") && cfg.Verify {
		v.on = true
	}
	if !changed("rpc") && len(cfg.RPC) > 0 {
		v.rpc = cfg.RPC
	}
	if !changed("genesis") && cfg.Genesis != "" {
		v.genesis = cfg.Genesis
	}
	if !changed("trust-height") && !changed("genesis") && cfg.TrustHeight != 0 {
		v.trustHeight, v.trustHash = cfg.TrustHeight, cfg.TrustHash
	}
	for _, d := range []struct {
		flag, key, val string
		into           *time.Duration
	}{{"trust-period", "trust_period", cfg.TrustPeriod, &v.trustPeriod}, {"max-age", "max_age", cfg.MaxAge, &v.maxAge}} {
		if changed(d.flag) || d.val == "" {
			continue
		}
		x, err := time.ParseDuration(d.val)
		if err != nil || x <= 0 {
			return fmt.Errorf("%s: %q: want a positive duration such as 168h or 30s", pos.Where(file, d.key), d.val)
		}
		*d.into = x
	}
	return nil
}

// enabled tells whether answers must be verified (--verify or client.json).
func (v *verifyFlags) enabled() (bool, error) {
	if err := v.merge(); err != nil {
		return false, err
	}
	return v.on, nil
}

// headers establishes the light client: the trust root of the flags (or
// the home's genesis file), headers from --rpc or the node's RPC as its
// /v1/status gives it (any source will do: headers are verified by the
// validators' signatures).
func (v *verifyFlags) headers(ctx context.Context, c *api.Client) (*verify.Headers, error) {
	opts := verify.Options{RPC: v.rpc, TrustPeriod: v.trustPeriod, MaxAge: v.maxAge}
	if v.trustPeriod <= 0 || v.maxAge <= 0 {
		return nil, fmt.Errorf("--trust-period %s, --max-age %s: want positive durations", v.trustPeriod, v.maxAge)
	}
	var st *api.Status
	status := func() (*api.Status, error) {
		if st == nil {
			s, err := c.Status(ctx)
			if err != nil && s.ChainID == "" {
				return nil, fmt.Errorf("ask the node for its chain and RPC: %w", err)
			}
			st = &s
		}
		return st, nil
	}
	switch {
	case v.trustHeight != 0 && v.genesis != "" && v.cmd.Flags().Changed("genesis"):
		return nil, errors.New("--genesis and --trust-height: give one trust root")
	case v.trustHeight != 0:
		if v.trustHeight < 0 || v.trustHash == "" {
			return nil, fmt.Errorf("--trust-height %d --trust-hash %q: want a positive height and the hash of its block", v.trustHeight, v.trustHash)
		}
		hash, err := hex.DecodeString(v.trustHash)
		if err != nil || len(hash) != 32 {
			return nil, fmt.Errorf("--trust-hash %q: want the 64 hex digits of a block hash", v.trustHash)
		}
		opts.TrustHeight, opts.TrustHash = v.trustHeight, hash
		// The chain id from the node is safe to take: the trusted hash
		// covers the header, chain id included.
		s, err := status()
		if err != nil {
			return nil, err
		}
		opts.ChainID = s.ChainID
	default:
		file := v.genesis
		if file == "" {
			file = filepath.Join(defaultHome(), "config", "genesis.json")
			if _, err := os.Stat(file); err != nil {
				return nil, fmt.Errorf("no trust root: pass --genesis FILE (a genesis file you trust) or --trust-height and --trust-hash, or set them in %s",
					filepath.Join(defaultHome(), ClientConfigFile))
			}
		}
		g, err := cmttypes.GenesisDocFromFile(file)
		if err != nil {
			return nil, fmt.Errorf("--genesis %s: %w", file, err)
		}
		opts.Genesis = g
	}
	if len(opts.RPC) == 0 {
		s, err := status()
		if err != nil {
			return nil, err
		}
		if s.RPC == "" {
			return nil, fmt.Errorf("the node at %s does not say where its CometBFT RPC is: pass --rpc URL", c.Addr())
		}
		opts.RPC = []string{rpcURL(s.RPC, c.Addr())}
	}
	return verify.NewHeaders(ctx, opts)
}

// rpcURL is the node's RPC address as a URL the client can reach: an
// unspecified host (0.0.0.0, [::]) is the API's host.
func rpcURL(rpc, apiAddr string) string {
	rpc = strings.Replace(rpc, "tcp://", "http://", 1)
	u, err := url.Parse(rpc)
	if err != nil {
		return rpc
	}
	if ip := net.ParseIP(u.Hostname()); u.Hostname() == "" || (ip != nil && ip.IsUnspecified()) {
		if a, err := url.Parse(apiAddr); err == nil && a.Hostname() != "" {
			u.Host = net.JoinHostPort(a.Hostname(), u.Port())
		}
	}
	return u.String()
}

// verifier is a verifying client of the node c reads, or nil when answers
// need no verifying.
func (v *verifyFlags) verifier(ctx context.Context, c *api.Client) (*verify.Client, error) {
	on, err := v.enabled()
	if err != nil || !on {
		return nil, err
	}
	h, err := v.headers(ctx, c)
	if err != nil {
		if !errors.Is(err, verify.ErrNotVerified) {
			err = fmt.Errorf("%w: %w", err, verify.ErrNotVerified)
		}
		return nil, err
	}
	return verify.NewClient(c.Addr(), h), nil
}

// verifiedGet reads path through vc into out, as the plain client would:
// a 404 matches api.ErrNotFound, other refusals are errors with the node's
// message. It returns the height the answer was verified at.
func verifiedGet(ctx context.Context, vc *verify.Client, path string, out any) (int64, error) {
	res, err := vc.Get(ctx, path)
	if err != nil {
		return 0, err
	}
	if res.Code >= 300 {
		msg := strings.TrimSpace(string(res.Body))
		var e api.Error
		if json.Unmarshal(res.Body, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		if res.Code == http.StatusNotFound {
			return res.Height, fmt.Errorf("%s (verified at height %d): %w", msg, res.Height, api.ErrNotFound)
		}
		return res.Height, fmt.Errorf("GET %s: HTTP %d: %s (verified at height %d)", path, res.Code, msg, res.Height)
	}
	if err := json.Unmarshal(res.Body, out); err != nil {
		return res.Height, fmt.Errorf("GET %s: decode the verified answer: %w", path, err)
	}
	return res.Height, nil
}

// read GETs path into out: verified when --verify (or client.json) says
// so, through call otherwise. It returns the verified height (0: not
// verified).
func (v *verifyFlags) read(ctx context.Context, c *api.Client, path string, out any, call func() error) (int64, error) {
	vc, err := v.verifier(ctx, c)
	if err != nil {
		return 0, err
	}
	if vc == nil {
		return 0, call()
	}
	return verifiedGet(ctx, vc, path, out)
}

// sayVerified tells the user at which height the answer was verified: a
// line after a table, on stderr beside JSON (which stays parseable).
func sayVerified(cmd *cobra.Command, output string, height int64) {
	if height == 0 {
		return
	}
	w := cmd.OutOrStdout()
	if output == "json" {
		w = cmd.ErrOrStderr()
	}
	fmt.Fprintf(w, "verified at height %d\n", height)
}

func newProxyCmd() *cobra.Command {
	var v verifyFlags
	var listen, addr string
	cmd := &cobra.Command{
		Use:   "proxy --listen ADDR --addr NODE_API",
		Short: "Serve a node's read API only with answers verified against the validators' signatures",
		Long: `Serve the read API of a node you do not have to trust (native, the Consul
subset, Prometheus http_sd) with verified answers only: every read is asked
with proof=1, its proofs checked against the app hash of a block header the
light client verified by the validators' signatures, and the answer rebuilt
from the proven records. A read that does not verify is answered 502 with
the reason. POST /v1/txs is passed on (transactions are signed). Run one
next to each consumer (Prometheus, a Consul client, a script), like a local
agent, and point the consumer at it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := v.merge(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c := api.NewClient(addr).WithWait(60*time.Second, cmd.ErrOrStderr())
			hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			h, err := v.headers(hctx, c)
			cancel()
			if err != nil {
				return fmt.Errorf("proxy: %w", err)
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			p, err := verify.NewProxy(verify.NewClient(c.Addr(), h), log)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("proxy: listen on %s: %w", listen, err)
			}
			srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
			}()
			fmt.Fprintf(cmd.OutOrStdout(), "verifying proxy of %s on http://%s (chain %s, trusting height %d %X)\n",
				c.Addr(), ln.Addr(), h.ChainID(), h.TrustHeight(), h.TrustHash())
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("proxy: %w", err)
			}
			return nil
		},
	}
	nodeAddr := os.Getenv("BFTMON_ADDR")
	if nodeAddr == "" {
		nodeAddr = "127.0.0.1:8500"
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:8600", "address to serve the verified API on")
	cmd.Flags().StringVar(&addr, "addr", nodeAddr, "the node's HTTP API address (env BFTMON_ADDR)")
	v.add(cmd, false)
	return cmd
}

// unknownExit answers a health check that could not verify: Nagios
// UNKNOWN (3) with the reason on stderr.
func unknownExit(w io.Writer, name string, err error) error {
	fmt.Fprintf(w, "UNKNOWN - cannot verify %s: %v\n", name, err)
	return exitError{3}
}
