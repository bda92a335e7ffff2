package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
)

// ReadConfig sizes the read benchmark.
type ReadConfig struct {
	Instances   int           // instances of service "web"
	Connections int           // concurrent HTTP connections and DNS clients
	Duration    time.Duration // per measured query
}

// Read runs a one-node network with cfg.Instances agreed-passing instances
// of "web" and measures how fast it answers reads: the HTTP queries with
// wrk (Debian's package; it must be on PATH), DNS with a loop of the miekg
// client, each for cfg.Duration. The load runs on the same machine.
func Read(ctx context.Context, w io.Writer, t *Targets, cfg ReadConfig) error {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found: apt-get install -y wrk")
	}
	bn, err := startNode(ctx, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer bn.stop()
	dnsAddr := bn.n.DNSAddr()
	if dnsAddr == "" {
		return errors.New("the node serves no DNS")
	}
	if err := registerWeb(ctx, w, bn, t, cfg.Instances); err != nil {
		return err
	}
	base := bn.c.Addr()
	for _, path := range []string{"/v1/health/service/web", "/v1/services/web?status=passing", "/v1/sd/prometheus"} {
		r, err := runWrk(ctx, wrk, base+path, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "HTTP GET %-34s %8.0f req/s  p50 %-9s p99 %-9s (wrk, %d connections, %s)\n", path, r.rps, r.p50, r.p99, cfg.Connections, cfg.Duration)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"web.service.bftmon.", mdns.TypeA}, {"web.service.bftmon.", mdns.TypeSRV}} {
		r, err := loadDNS(ctx, dnsAddr, q.name, q.qtype, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "DNS %-4s %-35s %8.0f q/s    p50 %-9s p99 %-9s (%d clients over UDP, %s; %d answers each)\n",
			mdns.TypeToString[q.qtype], q.name, r.rps, r.p50, r.p99, cfg.Connections, cfg.Duration, r.answers)
	}
	return nil
}

// registerWeb registers n instances of "web" with an http check on t and
// waits until all are agreed passing.
func registerWeb(ctx context.Context, w io.Writer, bn *benchNode, t *Targets, n int) error {
	cfg := struct{ Instances int }{n}
	fmt.Fprintf(w, "read: registering %d instances of web...\n", cfg.Instances)
	for i := range cfg.Instances {
		si := types.ServiceInstance{Name: "web", Id: fmt.Sprintf("web-%03d", i), Address: fmt.Sprintf("127.0.%d.%d", i/250, i%250+1), Port: 80,
			Datacenter: "dc1", Tags: []string{"v1"},
			Checks: []types.Check{{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: "http://" + t.HTTP + "/"}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
		if res, err := bn.c.Register(ctx, bn.op.Private, si); err != nil || res.Code != 0 {
			return fmt.Errorf("register %s: %+v %w", si.Id, res, err)
		}
	}
	fmt.Fprintf(w, "waiting until all %d are agreed passing...\n", cfg.Instances)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		insts, _, err := bn.c.Service(ctx, "web", &api.QueryOptions{Status: []string{"passing"}})
		if err == nil && len(insts) == cfg.Instances {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after 2m, %d of %d instances are passing (%v)", len(insts), cfg.Instances, err)
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

type loadResult struct {
	rps      float64
	p50, p99 string
	answers  int
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct = regexp.MustCompile(`(?m)^\s+(50|99)%\s+(\S+)`)
	wrkErr = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func runWrk(ctx context.Context, wrk, url string, cfg ReadConfig) (loadResult, error) {
	out, err := exec.CommandContext(ctx, wrk, "-t2", "-c"+strconv.Itoa(cfg.Connections), "-d"+strconv.Itoa(int(cfg.Duration.Seconds()))+"s", "--latency", url).CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk %s: %w: %s", url, err, out)
	}
	if m := wrkErr.FindSubmatch(out); m != nil {
		return loadResult{}, fmt.Errorf("wrk %s: %s requests failed:\n%s", url, m[1], out)
	}
	var r loadResult
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk printed no Requests/sec:\n%s", out)
	}
	r.rps, _ = strconv.ParseFloat(string(m[1]), 64)
	for _, p := range wrkPct.FindAllSubmatch(out, -1) {
		if string(p[1]) == "50" {
			r.p50 = string(p[2])
		} else {
			r.p99 = string(p[2])
		}
	}
	return r, nil
}

// loadDNS runs cfg.Connections clients asking name/qtype in a loop.
func loadDNS(ctx context.Context, addr, name string, qtype uint16, cfg ReadConfig) (loadResult, error) {
	var (
		mu      sync.Mutex
		lat     []time.Duration
		answers int
		first   error
		wg      sync.WaitGroup
	)
	stop := time.Now().Add(cfg.Duration)
	start := time.Now()
	for range cfg.Connections {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &mdns.Client{Net: "udp", UDPSize: 65000, Timeout: 2 * time.Second}
			m := new(mdns.Msg)
			m.SetQuestion(name, qtype)
			m.SetEdns0(65000, false)
			var mine []time.Duration
			for time.Now().Before(stop) && ctx.Err() == nil {
				t0 := time.Now()
				in, _, err := c.Exchange(m, addr)
				d := time.Since(t0)
				if err == nil && (in.Rcode != mdns.RcodeSuccess || len(in.Answer) == 0) {
					err = fmt.Errorf("%s %s: rcode %s, %d answers", name, mdns.TypeToString[qtype], mdns.RcodeToString[in.Rcode], len(in.Answer))
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, d)
				mu.Lock()
				answers = len(in.Answer)
				mu.Unlock()
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if first != nil {
		return loadResult{}, first
	}
	if len(lat) == 0 {
		return loadResult{}, errors.New("no DNS answer measured")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) string { return lat[int(p*float64(len(lat)-1))].Round(time.Microsecond).String() }
	return loadResult{rps: float64(len(lat)) / time.Since(start).Seconds(), p50: pct(0.5), p99: pct(0.99), answers: answers}, nil
}
