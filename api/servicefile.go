package api

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/bftmon/bftmon/app"
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
	DNS         *DNSCheck  `json:"dns"`
	GRPC        *GRPCCheck `json:"grpc"`
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
	BodyRegex       string            `json:"body_regex"`
	Headers         map[string]string `json:"headers"`
	TLSSkipVerify   bool              `json:"tls_skip_verify"`
	FollowRedirects *bool             `json:"follow_redirects"`
	// KeepAlive reuses one connection from probe to probe: the probe then
	// measures the request, not the connection set-up (default off).
	KeepAlive bool `json:"keep_alive"`
	// CertExpiryWarnDays makes the check warn when the server's certificate
	// expires within that many days.
	CertExpiryWarnDays uint32 `json:"cert_expiry_warn_days"`
}

// TCPCheck parameterises a tcp check.
type TCPCheck struct {
	Address string `json:"address"`
	// Send is written after connecting; Expect must then be read back.
	Send   string `json:"send"`
	Expect string `json:"expect"`
}

// DNSCheck parameterises a dns check.
type DNSCheck struct {
	// Server is the host:port of the DNS server to ask.
	Server string `json:"server"`
	Name   string `json:"name"`
	// Type is A (default), AAAA, SRV or TXT.
	Type string `json:"type"`
	// Expect lists answers that must all be present.
	Expect []string `json:"expect"`
}

// GRPCCheck parameterises a grpc check (the grpc.health.v1 protocol).
type GRPCCheck struct {
	Address       string `json:"address"`
	Service       string `json:"service"`
	TLS           bool   `json:"tls"`
	TLSSkipVerify bool   `json:"tls_skip_verify"`
}

// ExecCheck parameterises an exec check (a Nagios plugin).
type ExecCheck struct {
	// Argv is the plugin's absolute path and its arguments (no shell).
	Argv []string `json:"argv"`
	// TimeoutStatus is reported when the plugin is killed at its timeout:
	// critical (default, like Nagios), warning, unknown or passing.
	TimeoutStatus string `json:"timeout_status"`
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
	// The application's own rules, so a bad file is refused before it is signed.
	if err := app.ValidateInstance(&si); err != nil {
		return si, err
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

// kindOf is the kind a check file names, or else the one its parameters imply.
func (cf *CheckFile) kindOf() (string, error) {
	var given []string
	for k, set := range map[string]bool{"http": cf.HTTP != nil, "tcp": cf.TCP != nil, "dns": cf.DNS != nil, "grpc": cf.GRPC != nil, "exec": cf.Exec != nil} {
		if set {
			given = append(given, k)
		}
	}
	sort.Strings(given)
	kind := cf.Kind
	if kind == "https" {
		kind = "http"
	}
	switch {
	case kind != "":
		for _, g := range given {
			if g != kind {
				return "", fmt.Errorf("a %s check must not carry %s parameters", kind, g)
			}
		}
		return kind, nil
	case len(given) == 1:
		return given[0], nil
	case len(given) == 0:
		return "", fmt.Errorf("no probe given: add one of http, tcp, dns, grpc or exec, or say kind: passive")
	default:
		return "", fmt.Errorf("several probes given (%s): a check has one", strings.Join(given, ", "))
	}
}

// timing fills a check's interval, timeout, ttl and confirm from the file,
// with the defaults: interval 10s, timeout min(5s, interval), ttl 3×interval.
// A passive check has only a ttl, which it must give.
func (cf *CheckFile) timing(c *types.Check) error {
	confirm, err := duration("confirm", cf.Confirm, 0)
	if err != nil {
		return err
	}
	c.ConfirmMs = confirm.Milliseconds()
	if c.Kind == "passive" {
		if cf.Interval != "" || cf.Timeout != "" {
			return fmt.Errorf("a passive check has no interval or timeout: give only ttl (how long a submitted result stays fresh)")
		}
		if cf.TTL == "" {
			return fmt.Errorf("a passive check needs ttl: how long a submitted result stays fresh, e.g. ttl: 5m")
		}
		ttl, err := duration("ttl", cf.TTL, 0)
		c.TtlMs = ttl.Milliseconds()
		return err
	}
	interval, err := duration("interval", cf.Interval, 10*time.Second)
	if err != nil {
		return err
	}
	if interval < time.Second {
		return fmt.Errorf("interval %s below 1s", interval)
	}
	timeout, err := duration("timeout", cf.Timeout, min(5*time.Second, interval))
	if err != nil {
		return err
	}
	if timeout > interval {
		return fmt.Errorf("timeout %s above interval %s", timeout, interval)
	}
	ttl, err := duration("ttl", cf.TTL, 3*interval)
	if err != nil {
		return err
	}
	c.IntervalMs, c.TimeoutMs, c.TtlMs = interval.Milliseconds(), timeout.Milliseconds(), ttl.Milliseconds()
	return nil
}

func (cf *CheckFile) check() (types.Check, error) {
	c := types.Check{Id: cf.ID, Datacenters: cf.Datacenters, Quorum: cf.Quorum}
	if c.Id == "" {
		return c, fmt.Errorf("id is required")
	}
	kind, err := cf.kindOf()
	if err != nil {
		return c, err
	}
	c.Kind = kind
	if err := cf.timing(&c); err != nil {
		return c, err
	}
	need := func(given bool, example string) error {
		if !given {
			return fmt.Errorf("kind %s needs %s", kind, example)
		}
		return nil
	}
	switch kind {
	case "http":
		if err := need(cf.HTTP != nil, "http: {url: ...}"); err != nil {
			return c, err
		}
		method := cf.HTTP.Method
		if method == "" {
			method = "GET"
		}
		c.Http = &types.HTTPParams{
			Url: cf.HTTP.URL, Method: method, ExpectStatus: cf.HTTP.ExpectStatus,
			BodyContains: cf.HTTP.BodyContains, BodyRegex: cf.HTTP.BodyRegex,
			Headers: pairs(cf.HTTP.Headers), TlsSkipVerify: cf.HTTP.TLSSkipVerify,
			NoFollowRedirects:  cf.HTTP.FollowRedirects != nil && !*cf.HTTP.FollowRedirects,
			CertExpiryWarnDays: cf.HTTP.CertExpiryWarnDays,
			KeepAlive:          cf.HTTP.KeepAlive,
		}
	case "tcp":
		if err := need(cf.TCP != nil, "tcp: {address: host:port}"); err != nil {
			return c, err
		}
		c.Tcp = &types.TCPParams{Address: cf.TCP.Address, Send: cf.TCP.Send, Expect: cf.TCP.Expect}
	case "dns":
		if err := need(cf.DNS != nil, "dns: {server: host:port, name: ...}"); err != nil {
			return c, err
		}
		c.Dns = &types.DNSParams{Server: cf.DNS.Server, Name: cf.DNS.Name, Type: strings.ToUpper(cf.DNS.Type), Expect: cf.DNS.Expect}
	case "grpc":
		if err := need(cf.GRPC != nil, "grpc: {address: host:port}"); err != nil {
			return c, err
		}
		c.Grpc = &types.GRPCParams{Address: cf.GRPC.Address, Service: cf.GRPC.Service, Tls: cf.GRPC.TLS, TlsSkipVerify: cf.GRPC.TLSSkipVerify}
	case "exec":
		if err := need(cf.Exec != nil && len(cf.Exec.Argv) > 0, "exec: {argv: [/path/to/plugin, args...]}"); err != nil {
			return c, err
		}
		c.Exec = &types.ExecParams{Argv: cf.Exec.Argv}
		if cf.Exec.TimeoutStatus != "" {
			st, err := types.ParseStatus(cf.Exec.TimeoutStatus)
			if err != nil || st > types.STATUS_UNKNOWN {
				return c, fmt.Errorf("exec timeout_status %q: want passing, warning, critical or unknown", cf.Exec.TimeoutStatus)
			}
			c.Exec.TimeoutStatus = st
		}
	}
	// Unknown kinds, stray parameters and every other rule are the application's (ValidateInstance).
	return c, nil
}
