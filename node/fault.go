package node

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/checks"
)

// faults is the fault injector of a test node (bftmon start
// --fault-injection): targets this node's observer is told it cannot reach.
// Their probes fail as a cut-off datacenter's would, without being run.
type faults struct {
	mu          sync.RWMutex
	unreachable map[string]bool // host:port
}

// intercept is the scheduler's Intercept hook: a target whose address is
// unreachable gets a connection failure instead of a probe.
func (f *faults) intercept(t checks.Target) (checks.Result, bool) {
	if f == nil {
		return checks.Result{}, false
	}
	addr := targetAddr(t.Check)
	f.mu.RLock()
	cut := addr != "" && f.unreachable[addr]
	f.mu.RUnlock()
	if !cut {
		return checks.Result{}, false
	}
	return checks.Result{Status: types.STATUS_CRITICAL, Output: "dial tcp " + addr + ": connect: network is unreachable (fault injected)"}, true
}

// targetAddr is the host:port a check reaches, or "" for exec and passive
// checks.
func targetAddr(c types.Check) string {
	switch {
	case c.Http != nil:
		u, err := url.Parse(c.Http.Url)
		if err != nil {
			return ""
		}
		if u.Port() != "" {
			return u.Host
		}
		if u.Scheme == "https" {
			return net.JoinHostPort(u.Hostname(), "443")
		}
		return net.JoinHostPort(u.Hostname(), "80")
	case c.Tcp != nil:
		return c.Tcp.Address
	case c.Dns != nil:
		return c.Dns.Server
	case c.Grpc != nil:
		return c.Grpc.Address
	}
	return ""
}

// Unreachable is the body of the fault injector's endpoint.
type Unreachable struct {
	// Targets are host:port addresses this node's observer cannot reach.
	Targets []string `json:"targets"`
}

// ServeHTTP serves /v1/debug/unreachable: GET lists the targets, PUT
// replaces them, DELETE clears them.
func (f *faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPut:
		var u Unreachable
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&u); err != nil {
			http.Error(w, `{"error":"body: want {\"targets\": [\"host:port\", ...]}"}`, http.StatusBadRequest)
			return
		}
		for _, t := range u.Targets {
			if _, _, err := net.SplitHostPort(t); err != nil {
				http.Error(w, `{"error":"target `+t+`: want host:port"}`, http.StatusBadRequest)
				return
			}
		}
		f.mu.Lock()
		f.unreachable = map[string]bool{}
		for _, t := range u.Targets {
			f.unreachable[t] = true
		}
		f.mu.Unlock()
	case http.MethodDelete:
		f.mu.Lock()
		f.unreachable = map[string]bool{}
		f.mu.Unlock()
	case http.MethodGet:
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		http.Error(w, `{"error":"use GET, PUT or DELETE"}`, http.StatusMethodNotAllowed)
		return
	}
	f.mu.RLock()
	out := Unreachable{Targets: []string{}}
	for t := range f.unreachable {
		out.Targets = append(out.Targets, t)
	}
	f.mu.RUnlock()
	slices.Sort(out.Targets)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
