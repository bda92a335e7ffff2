package interop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/notify"
)

// amAlert is the part of Alertmanager's GET /api/v2/alerts the test reads.
type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

// TestAlertmanager runs the real Alertmanager (Debian's
// prometheus-alertmanager) as a receiver of a node: a check turning
// critical fires an alert there with bftmon's labels, and the check
// recovering resolves it.
func TestAlertmanager(t *testing.T) {
	am := lookPath(t, "prometheus-alertmanager", "prometheus-alertmanager")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	amAddr := freeAddr(t)
	startProcess(t, am, "--config.file="+cfgPath, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+amAddr, "--cluster.listen-address=")

	tn := startNodeWith(ctx, t, func(st *node.Settings) {
		st.Notify = notify.Settings{Receivers: []notify.ReceiverSettings{
			{Name: "am", URL: "http://" + amAddr, Format: notify.FormatAlertmanager, Kinds: []string{"state_change"}},
		}}
	})
	var down atomic.Bool
	target := httpTarget(t, &down)
	inst := tn.instance("web", "web-1", "10.1.0.1", 80, nil)
	inst.Checks[0].Http.Url = target
	tn.register(ctx, t, inst)
	tn.waitPassing(ctx, t, "web", 1)

	alerts := func() ([]amAlert, error) {
		resp, err := http.Get("http://" + amAddr + "/api/v2/alerts")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var out []amAlert
		return out, json.NewDecoder(resp.Body).Decode(&out)
	}
	down.Store(true)
	waitFor(t, "Alertmanager to list web critical", 60*time.Second, func() (bool, error) {
		list, err := alerts()
		if err != nil {
			return false, err
		}
		for _, a := range list {
			l := a.Labels
			if l["alertname"] == "BftmonCheck" && l["service"] == "web" && l["instance"] == "web-1" && l["check"] == "http" &&
				l["severity"] == "critical" && l["datacenter"] == "dc1" && a.Status.State == "active" && a.Annotations["alert_id"] != "" {
				return true, nil
			}
		}
		return false, fmt.Errorf("alerts %+v", list)
	})
	down.Store(false)
	waitFor(t, "the alert resolved in Alertmanager", 60*time.Second, func() (bool, error) {
		list, err := alerts()
		if err != nil {
			return false, err
		}
		for _, a := range list {
			if a.Labels["service"] == "web" {
				return false, fmt.Errorf("still listed: %+v", a)
			}
		}
		return true, nil
	})
}

// httpTarget is a real HTTP service answering 503 while down is set; it
// returns its URL.
func httpTarget(t *testing.T, down *atomic.Bool) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
