package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/bftmon/bftmon/verify"
)

// VerifyConfig sizes the verification benchmark.
type VerifyConfig struct {
	Instances   int           // instances of service "web"
	Reads       int           // sequential reads measured each way
	Connections int           // wrk -c against the node and the proxy
	Duration    time.Duration // per wrk run (0: no wrk runs)
}

// Verify runs a one-node network with cfg.Instances agreed-passing
// instances of "web" and measures what verifying costs: the latency of
// cfg.Reads plain reads of /v1/services/web beside as many proven ones
// (?proof=1, not checked) and verified ones (light client from the
// genesis validators, proofs, rebuild), the sizes
// of the plain and the proven answer, and wrk's throughput against the
// node and against a verifying proxy in front of it.
func Verify(ctx context.Context, w io.Writer, t *Targets, cfg VerifyConfig) error {
	bn, err := startNode(ctx, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer bn.stop()
	if err := registerWeb(ctx, w, bn, t, cfg.Instances); err != nil {
		return err
	}
	g, err := cmttypes.GenesisDocFromFile(filepath.Join(bn.home, "config", "genesis.json"))
	if err != nil {
		return err
	}
	h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{bn.n.RPCURL()}, Genesis: g})
	if err != nil {
		return err
	}
	vc := verify.NewClient(bn.c.Addr(), h)
	const path = "/v1/services/web"
	hc := &http.Client{Timeout: time.Minute}
	plainSize, provenSize, proofSize := 0, 0, 0
	get := func(uri string) ([]byte, error) {
		resp, err := hc.Get(bn.c.Addr() + uri)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: HTTP %d: %s", uri, resp.StatusCode, b)
		}
		return b, err
	}
	plain := func() error {
		b, err := get(path)
		plainSize = len(b)
		return err
	}
	verified := func() error {
		_, err := vc.Get(ctx, path)
		return err
	}
	b, err := get(path + "?proof=1")
	if err != nil {
		return err
	}
	provenSize = len(b)
	var p struct {
		Proofs json.RawMessage `json:"proofs"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("proven answer: %w", err)
	}
	proofSize = len(p.Proofs)
	for _, m := range []struct {
		name string
		f    func() error
	}{{"plain", plain}, {"proven", func() error { _, err := get(path + "?proof=1"); return err }}, {"verified", verified}} {
		ds, err := timeReads(cfg.Reads, m.f)
		if err != nil {
			return fmt.Errorf("%s read: %w", m.name, err)
		}
		fmt.Fprintf(w, "GET %s %-8s  p50 %-9s p99 %-9s (%d sequential reads, %d instances)\n", path, m.name,
			quantile(ds, 0.5).Round(10*time.Microsecond), quantile(ds, 0.99).Round(10*time.Microsecond), len(ds), cfg.Instances)
	}
	fmt.Fprintf(w, "answer sizes: plain %d bytes, proven %d bytes (proof bundle %d bytes of JSON)\n", plainSize, provenSize, proofSize)
	if cfg.Duration <= 0 {
		return nil
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found: apt-get install -y wrk")
	}
	proxy, err := verify.NewProxy(vc, nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	rcfg := ReadConfig{Connections: cfg.Connections, Duration: cfg.Duration}
	for _, uri := range []string{"/v1/health/service/web", "/v1/services/web?status=passing"} {
		for _, target := range []struct{ name, base string }{{"node", bn.c.Addr()}, {"proxy", "http://" + ln.Addr().String()}} {
			r, err := runWrk(ctx, wrk, target.base+uri, rcfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(w, "HTTP GET %-34s %-5s %8.0f req/s  p50 %-9s p99 %-9s (wrk -t2 -c%d, %s)\n", uri, target.name, r.rps, r.p50, r.p99, cfg.Connections, cfg.Duration)
		}
	}
	return nil
}

// timeReads times n calls of f (after one not timed), sorted.
func timeReads(n int, f func() error) ([]time.Duration, error) {
	if err := f(); err != nil {
		return nil, err
	}
	ds := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		ds = append(ds, time.Since(start))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds, nil
}
