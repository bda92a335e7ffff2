package api

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/bftmon/bftmon/app/types"
)

// ServiceFile is the YAML or JSON form of a service definition
// (docs/service.example.yaml).
type ServiceFile struct {
	Name       string            `json:"name"`
	ID         string            `json:"id"`
	Address    string            `json:"address"`
	Port       int               `json:"port"`
	Datacenter string            `json:"datacenter"`
	Tags       []string          `json:"tags"`
	Meta       map[string]string `json:"meta"`
	Checks     []CheckFile       `json:"checks"`
}

// CheckFile is one check of a service file.
type CheckFile struct {
	ID          string     `json:"id"`
	Kind        string     `json:"kind"`
	HTTP        *HTTPCheck `json:"http"`
	TCP         *TCPCheck  `json:"tcp"`
	Exec        *ExecCheck `json:"exec"`
	Interval    string     `json:"interval"`
	Timeout     string     `json:"timeout"`
	TTL         string     `json:"ttl"`
	Confirm     string     `json:"confirm"`
	Datacenters []string   `json:"datacenters"`
	Quorum      uint64     `json:"quorum"`
}

// HTTPCheck parameterises an http check.
type HTTPCheck struct {
	URL             string            `json:"url"`
	Method          string            `json:"method"`
	ExpectStatus    []uint32          `json:"expect_status"`
	BodyContains    string            `json:"body_contains"`
	Headers         map[string]string `json:"headers"`
	TLSSkipVerify   bool              `json:"tls_skip_verify"`
	FollowRedirects *bool             `json:"follow_redirects"`
}

// ExecCheck parameterises an exec check (a Nagios plugin).
type ExecCheck struct {
	// Argv is the plugin's absolute path and its arguments (no shell).
	Argv []string `json:"argv"`
	// TimeoutStatus is reported when the plugin is killed at its timeout:
	// critical (default, like Nagios), warning, unknown or passing.
	TimeoutStatus string `json:"timeout_status"`
}

// TCPCheck parameterises a tcp check.
type TCPCheck struct {
	Address string `json:"address"`
}

// ParseServiceFile reads a service definition in YAML or JSON, applies the
// defaults and validates it.
func ParseServiceFile(data []byte) (types.ServiceInstance, error) {
	var f ServiceFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return types.ServiceInstance{}, fmt.Errorf("service file: %w", err)
	}
	si, err := f.Instance()
	if err != nil {
		return types.ServiceInstance{}, fmt.Errorf("service %s/%s: %w", f.Name, f.ID, err)
	}
	return si, nil
}

// Instance converts the file into the registration message.
func (f *ServiceFile) Instance() (types.ServiceInstance, error) {
	si := types.ServiceInstance{Name: f.Name, Id: f.ID, Address: f.Address, Datacenter: f.Datacenter, Tags: f.Tags, Meta: pairs(f.Meta)}
	if f.Name == "" || f.ID == "" {
		return si, fmt.Errorf("name and id are required")
	}
	if f.Port < 0 || f.Port > 65535 {
		return si, fmt.Errorf("port %d outside 0..65535", f.Port)
	}
	si.Port = uint32(f.Port)
	seen := map[string]bool{}
	for i := range f.Checks {
		c, err := f.Checks[i].check()
		if err != nil {
			return si, fmt.Errorf("check %s: %w", f.Checks[i].ID, err)
		}
		if seen[c.Id] {
			return si, fmt.Errorf("check id %q used twice", c.Id)
		}
		seen[c.Id] = true
		si.Checks = append(si.Checks, c)
	}
	return si, nil
}

func pairs(m map[string]string) []types.Pair {
	out := make([]types.Pair, 0, len(m))
	for k, v := range m {
		out = append(out, types.Pair{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func duration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s %q: want a duration like 10s or 1m", field, s)
	}
	return d, nil
}

func (cf *CheckFile) check() (types.Check, error) {
	c := types.Check{Id: cf.ID, Kind: cf.Kind, Datacenters: cf.Datacenters, Quorum: cf.Quorum}
	if c.Id == "" {
		return c, fmt.Errorf("id is required")
	}
	if c.Kind == "" {
		switch {
		case cf.HTTP != nil:
			c.Kind = "http"
		case cf.TCP != nil:
			c.Kind = "tcp"
		case cf.Exec != nil:
			c.Kind = "exec"
		default:
			return c, fmt.Errorf("no probe given: add http, tcp or exec")
		}
	}
	interval, err := duration("interval", cf.Interval, 10*time.Second)
	if err != nil {
		return c, err
	}
	if interval < time.Second {
		return c, fmt.Errorf("interval %s below 1s", interval)
	}
	timeout, err := duration("timeout", cf.Timeout, min(5*time.Second, interval))
	if err != nil {
		return c, err
	}
	if timeout > interval {
		return c, fmt.Errorf("timeout %s above interval %s", timeout, interval)
	}
	ttl, err := duration("ttl", cf.TTL, 3*interval)
	if err != nil {
		return c, err
	}
	if ttl < interval {
		return c, fmt.Errorf("ttl %s below interval %s", ttl, interval)
	}
	confirm, err := duration("confirm", cf.Confirm, 0)
	if err != nil {
		return c, err
	}
	c.IntervalMs, c.TimeoutMs, c.TtlMs, c.ConfirmMs = interval.Milliseconds(), timeout.Milliseconds(), ttl.Milliseconds(), confirm.Milliseconds()
	switch c.Kind {
	case "http", "https":
		c.Kind = "http"
		if cf.HTTP == nil {
			return c, fmt.Errorf("kind http needs http: {url: ...}")
		}
		u, err := url.Parse(cf.HTTP.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("http url %q: must be absolute http or https", cf.HTTP.URL)
		}
		method := cf.HTTP.Method
		if method == "" {
			method = "GET"
		}
		c.Http = &types.HTTPParams{
			Url: cf.HTTP.URL, Method: method, ExpectStatus: cf.HTTP.ExpectStatus, BodyContains: cf.HTTP.BodyContains,
			Headers: pairs(cf.HTTP.Headers), TlsSkipVerify: cf.HTTP.TLSSkipVerify,
			NoFollowRedirects: cf.HTTP.FollowRedirects != nil && !*cf.HTTP.FollowRedirects,
		}
	case "tcp":
		if cf.TCP == nil {
			return c, fmt.Errorf("kind tcp needs tcp: {address: host:port}")
		}
		if _, _, err := net.SplitHostPort(cf.TCP.Address); err != nil {
			return c, fmt.Errorf("tcp address %q: want host:port", cf.TCP.Address)
		}
		c.Tcp = &types.TCPParams{Address: cf.TCP.Address}
	case "exec":
		if cf.Exec == nil || len(cf.Exec.Argv) == 0 {
			return c, fmt.Errorf("kind exec needs exec: {argv: [/path/to/plugin, args...]}")
		}
		if !strings.HasPrefix(cf.Exec.Argv[0], "/") {
			return c, fmt.Errorf("exec argv[0] %q: give the plugin's absolute path", cf.Exec.Argv[0])
		}
		c.Exec = &types.ExecParams{Argv: cf.Exec.Argv}
		if cf.Exec.TimeoutStatus != "" {
			st, err := types.ParseStatus(cf.Exec.TimeoutStatus)
			if err != nil || st > types.STATUS_UNKNOWN {
				return c, fmt.Errorf("exec timeout_status %q: want passing, warning, critical or unknown", cf.Exec.TimeoutStatus)
			}
			c.Exec.TimeoutStatus = st
		}
	default:
		return c, fmt.Errorf("unknown check kind %q (known: exec, http, tcp)", c.Kind)
	}
	return c, nil
}
