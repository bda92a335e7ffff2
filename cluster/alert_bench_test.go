package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/notify"
)

// BenchmarkDetectionToDelivery measures detection-to-delivery latency: from
// the moment a real HTTP target starts failing until a webhook receiver has
// the alert, on a 4-node loopback network (delivery mode one), and side by
// side in the same run the same target watched by Debian's Prometheus +
// prometheus-blackbox-exporter + Alertmanager at the same probe interval
// (rule `probe_success == 0`, for: 0s; Alertmanager group_wait 0s and its
// default 30s). One trial per b.N; at least 20 for the figures to mean
// something:
//
//	go test -run '^$' -bench DetectionToDelivery -benchtime 20x -timeout 90m ./cluster
func BenchmarkDetectionToDelivery(b *testing.B) {
	for _, interval := range []time.Duration{time.Second, 5 * time.Second} {
		b.Run("interval="+interval.String(), func(b *testing.B) { detectionToDelivery(b, interval) })
	}
}

// hookRecorder receives webhooks: bftmon's native ones at /bftmon and
// Alertmanager's at /am/<route>, recording when each alert first arrived.
type hookRecorder struct {
	mu    sync.Mutex
	first map[string]time.Time // "bftmon/<alert id>" or "am/<route>/<instance>"
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	now := time.Now()
	var keys []string
	switch {
	case r.URL.Path == "/bftmon":
		keys = append(keys, "bftmon/"+r.Header.Get(notify.HeaderID))
	case strings.HasPrefix(r.URL.Path, "/am/"):
		var msg struct {
			Alerts []struct {
				Status string            `json:"status"`
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		json.Unmarshal(body, &msg)
		for _, a := range msg.Alerts {
			if a.Status == "firing" {
				keys = append(keys, strings.TrimPrefix(r.URL.Path, "/")+"/"+a.Labels["instance"])
			}
		}
	}
	h.mu.Lock()
	for _, k := range keys {
		if _, ok := h.first[k]; !ok {
			h.first[k] = now
		}
	}
	h.mu.Unlock()
}

func (h *hookRecorder) at(key string) (time.Time, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.first[key]
	return t, ok
}

// promStack is Prometheus + blackbox exporter + Alertmanager watching one
// target URL at a time (file_sd, so that each trial's target is a new
// Alertmanager group).
type promStack struct {
	sdFile, promAddr string
	procs            []*exec.Cmd
}

func startPromStack(b *testing.B, dir string, interval time.Duration, hooks string) *promStack {
	for _, bin := range []string{"prometheus", "prometheus-blackbox-exporter", "prometheus-alertmanager"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.Skipf("%s not found (apt-get install prometheus prometheus-blackbox-exporter prometheus-alertmanager)", bin)
		}
	}
	s := &promStack{sdFile: filepath.Join(dir, "targets.json"), promAddr: testutil.FreeAddr(b)}
	bbAddr, amAddr := testutil.FreeAddr(b), testutil.FreeAddr(b)
	timeout := min(interval, time.Second)
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			b.Fatal(err)
		}
		return p
	}
	bbCfg := write("blackbox.yml", fmt.Sprintf("modules:\n  http_2xx:\n    prober: http\n    timeout: %s\n", timeout))
	amCfg := write("alertmanager.yml", fmt.Sprintf(`route:
  receiver: none
  group_by: [instance]
  routes:
    - {receiver: gw0, group_wait: 0s, continue: true}
    - {receiver: default, continue: true}
receivers:
  - name: none
  - name: gw0
    webhook_configs: [{url: "%[1]s/am/gw0", send_resolved: false}]
  - name: default
    webhook_configs: [{url: "%[1]s/am/default", send_resolved: false}]
`, hooks))
	rules := write("rules.yml", `groups:
  - name: bench
    rules:
      - {alert: TargetDown, expr: probe_success == 0, for: 0s}
`)
	s.setTarget(b, "http://127.0.0.1:1/none")
	promCfg := write("prometheus.yml", fmt.Sprintf(`global: {scrape_interval: %[1]s, evaluation_interval: %[1]s, scrape_timeout: %[2]s}
rule_files: [%[3]q]
alerting: {alertmanagers: [{static_configs: [{targets: [%[4]q]}]}]}
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params: {module: [http_2xx]}
    file_sd_configs: [{files: [%[5]q], refresh_interval: 1s}]
    relabel_configs:
      - {source_labels: [__address__], target_label: __param_target}
      - {source_labels: [__param_target], target_label: instance}
      - {target_label: __address__, replacement: %[6]q}
`, interval, timeout, rules, amAddr, s.sdFile, bbAddr))
	start := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		log, _ := os.Create(filepath.Join(dir, name+".log"))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		s.procs = append(s.procs, cmd)
	}
	start("prometheus-blackbox-exporter", "--config.file="+bbCfg, "--web.listen-address="+bbAddr)
	start("prometheus-alertmanager", "--config.file="+amCfg, "--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+amAddr, "--cluster.listen-address=")
	start("prometheus", "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "prom"), "--web.listen-address="+s.promAddr)
	b.Cleanup(func() {
		for _, p := range s.procs {
			p.Process.Kill()
			p.Wait()
		}
	})
	return s
}

// setTarget points the blackbox job at target.
func (s *promStack) setTarget(b *testing.B, target string) {
	tmp := s.sdFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf(`[{"targets": [%q]}]`, target)), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(tmp, s.sdFile); err != nil {
		b.Fatal(err)
	}
}

// probeUp tells whether Prometheus has a successful probe of target.
func (s *promStack) probeUp(target string) (bool, error) {
	q := url.Values{"query": {fmt.Sprintf(`probe_success{instance=%q} == 1`, target)}}
	resp, err := http.Get("http://" + s.promAddr + "/api/v1/query?" + q.Encode())
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return false, err
	}
	return len(r.Data.Result) > 0, nil
}

func detectionToDelivery(b *testing.B, interval time.Duration) {
	ctx := context.Background()
	hooks := &hookRecorder{first: map[string]time.Time{}}
	hookSrv := httptest.NewServer(hooks)
	defer hookSrv.Close()
	var down atomic.Bool
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer target.Close()

	stack := startPromStack(b, b.TempDir(), interval, hookSrv.URL)
	c := New(b, 4, 2)
	c.SetNotify(notify.Settings{HandoffDelay: "3s", Receivers: []notify.ReceiverSettings{
		{Name: "bench", URL: hookSrv.URL + "/bftmon", Kinds: []string{"state_change"}},
	}})
	c.StartAll()
	n0 := c.Nodes[0]
	ms := interval.Milliseconds()
	check := types.Check{Id: "http", Kind: "http", Http: &types.HTTPParams{Url: target.URL + "/health"},
		IntervalMs: ms, TimeoutMs: min(ms, 1000), TtlMs: 3 * ms}
	web := types.ServiceInstance{Name: "web", Id: "web-1", Address: "127.0.0.1", Checks: []types.Check{check}}
	if res, err := n0.Client.Register(ctx, c.Operator.Private, web); err != nil || res.Code != 0 {
		b.Fatalf("register: %+v %v", res, err)
	}
	hard := func(want string) {
		c.WaitFor("web hard "+want, 3*Patience, func(ctx context.Context) (bool, error) {
			ch, err := webCheck(ctx, n0)
			return err == nil && ch.HardStatus == want, err
		})
	}
	hard("passing")

	var ours, gw0, gwDefault []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		down.Store(false)
		hard("passing")
		tgt := fmt.Sprintf("%s/t%d", target.URL, i)
		stack.setTarget(b, tgt)
		c.WaitFor("Prometheus probing "+tgt, 3*Patience, func(context.Context) (bool, error) { return stack.probeUp(tgt) })
		from := c.MaxHeight(ctx)
		b.StartTimer()

		t0 := time.Now()
		down.Store(true)
		var alertID string
		c.WaitFor("the alert at every receiver", 5*Patience, func(ctx context.Context) (bool, error) {
			if alertID == "" {
				list, err := alertsSince(ctx, n0, "state_change", from)
				if err != nil {
					return false, err
				}
				for _, a := range list {
					if a.To == "critical" {
						alertID = a.ID
					}
				}
			}
			_, okOurs := hooks.at("bftmon/" + alertID)
			_, ok0 := hooks.at("am/gw0/" + tgt)
			_, okDef := hooks.at("am/default/" + tgt)
			return alertID != "" && okOurs && ok0 && okDef, fmt.Errorf("alert %q: bftmon %v, group_wait 0s %v, default %v", alertID, okOurs, ok0, okDef)
		})
		at, _ := hooks.at("bftmon/" + alertID)
		ours = append(ours, at.Sub(t0))
		at, _ = hooks.at("am/gw0/" + tgt)
		gw0 = append(gw0, at.Sub(t0))
		at, _ = hooks.at("am/default/" + tgt)
		gwDefault = append(gwDefault, at.Sub(t0))
	}
	b.StopTimer()
	down.Store(false)

	q := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(p*float64(len(s))))].Round(10 * time.Millisecond)
	}
	b.ReportMetric(float64(q(ours, .5).Milliseconds()), "bftmon-p50-ms")
	b.ReportMetric(float64(q(ours, .99).Milliseconds()), "bftmon-p99-ms")
	b.ReportMetric(float64(q(gw0, .5).Milliseconds()), "prom-gw0-p50-ms")
	b.ReportMetric(float64(q(gw0, .99).Milliseconds()), "prom-gw0-p99-ms")
	b.ReportMetric(float64(q(gwDefault, .5).Milliseconds()), "prom-default-p50-ms")
	b.ReportMetric(float64(q(gwDefault, .99).Milliseconds()), "prom-default-p99-ms")
	b.Logf("interval %s, %d trials, detection to delivery:\n"+
		"  bftmon (4 nodes, 2 dcs, quorum > 2/3, confirm 0, flush 1s, loopback consensus timeouts, mode one): p50 %s  p99 %s\n"+
		"  Prometheus + blackbox + Alertmanager, group_wait 0s:                                       p50 %s  p99 %s\n"+
		"  Prometheus + blackbox + Alertmanager, group_wait 30s (default):                            p50 %s  p99 %s",
		interval, len(ours), q(ours, .5), q(ours, .99), q(gw0, .5), q(gw0, .99), q(gwDefault, .5), q(gwDefault, .99))
}
