package interop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/internal/testutil"
)

// lookPath finds a program CI installs: a test without it is skipped on a
// developer's machine and fails in CI (CI=true).
func lookPath(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (apt-get install %s)", name, pkg)
		}
		t.Fatalf("%s not found: .ci/run must install %s", name, pkg)
	}
	return p
}

// startProcess starts a real program for the test, kills it when the test
// ends, and prints what it logged if the test failed.
func startProcess(t *testing.T, bin string, args ...string) {
	t.Helper()
	var log testutil.SyncBuffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(bin), log.String())
		}
	})
}

// promTargets is the part of Prometheus' GET /api/v1/targets the test reads.
type promTargets struct {
	Status string `json:"status"`
	Data   struct {
		ActiveTargets []struct {
			DiscoveredLabels map[string]string `json:"discoveredLabels"`
			Labels           map[string]string `json:"labels"`
			ScrapePool       string            `json:"scrapePool"`
			ScrapeURL        string            `json:"scrapeUrl"`
			Health           string            `json:"health"`
			LastError        string            `json:"lastError"`
		} `json:"activeTargets"`
	} `json:"data"`
}

// TestPrometheusHTTPSD runs the real Prometheus (Debian's package) with an
// http_sd_configs job on /v1/sd/prometheus and a job scraping the node's
// /metrics: Prometheus lists exactly the registered instances with the
// __meta_bftmon_* labels, and scrapes /metrics successfully.
func TestPrometheusHTTPSD(t *testing.T) {
	prom := lookPath(t, "prometheus", "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tn := startNode(ctx, t)
	tn.register(ctx, t, tn.instance("web", "web-1", "10.1.0.1", 8080, []string{"v1"}))
	tn.register(ctx, t, tn.instance("web", "web-2", "10.1.0.2", 8080, []string{"v2"}))
	tn.register(ctx, t, tn.instance("db", "db-1", "10.2.0.1", 5432, nil))
	tn.waitPassing(ctx, t, "web", 2)

	dir := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: web
    http_sd_configs:
      - url: http://%[1]s/v1/sd/prometheus?service=web
        refresh_interval: 1s
  - job_name: bftmon
    static_configs:
      - targets: ["%[1]s"]
`, tn.httpAddr)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	startProcess(t, prom, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr)

	var last promTargets
	waitFor(t, "Prometheus to list the web instances and scrape bftmon", 90*time.Second, func() (bool, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/targets")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		last = promTargets{}
		if err := json.NewDecoder(resp.Body).Decode(&last); err != nil {
			return false, err
		}
		var web []string
		selfUp := false
		for _, tg := range last.Data.ActiveTargets {
			switch tg.ScrapePool {
			case "web":
				d := tg.DiscoveredLabels
				web = append(web, strings.Join([]string{d["__address__"], d["__meta_bftmon_service"], d["__meta_bftmon_instance"],
					d["__meta_bftmon_datacenter"], d["__meta_bftmon_status"], d["__meta_bftmon_tags"]}, " "))
			case "bftmon":
				selfUp = tg.Health == "up" && tg.LastError == ""
			}
		}
		sort.Strings(web)
		got := strings.Join(web, "; ")
		want := "10.1.0.1:8080 web web-1 dc1 passing ,v1,; 10.1.0.2:8080 web web-2 dc1 passing ,v2,"
		if got != want || !selfUp {
			return false, fmt.Errorf("web targets %q (want %q), bftmon scrape up: %v", got, want, selfUp)
		}
		return true, nil
	})
}
