package api_test

import (
	"os"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/api"
)

func TestParseServiceFile(t *testing.T) {
	const yamlOK = `
name: web
id: web-1
address: 127.0.0.1
port: 8080
datacenter: dc1
tags: [v2]
meta: {version: "2.1.0", role: primary}
checks:
  - id: http
    http: {url: "http://127.0.0.1:8080/health", expect_status: [200], headers: {X-B: b, X-A: a}}
    interval: 5s
  - id: tcp
    tcp: {address: "127.0.0.1:8080"}
`
	si, err := api.ParseServiceFile([]byte(yamlOK))
	if err != nil {
		t.Fatal(err)
	}
	if si.Name != "web" || si.Id != "web-1" || si.Port != 8080 || len(si.Checks) != 2 {
		t.Fatalf("parsed %+v", si)
	}
	c := si.Checks[0]
	if c.Kind != "http" || c.IntervalMs != 5000 || c.TimeoutMs != 5000 || c.TtlMs != 15000 || c.Http.Method != "GET" {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if si.Meta[0].Key != "role" || c.Http.Headers[0].Key != "X-A" {
		t.Fatalf("maps must become sorted pairs: %+v %+v", si.Meta, c.Http.Headers)
	}
	if si.Checks[1].Kind != "tcp" || si.Checks[1].IntervalMs != 10000 || si.Checks[1].TimeoutMs != 5000 {
		t.Fatalf("tcp defaults: %+v", si.Checks[1])
	}

	execOK := `{name: nag, id: n-1, checks: [{id: tcp, exec: {argv: [/usr/lib/nagios/plugins/check_tcp, -H, 127.0.0.1, -p, "80"], timeout_status: unknown}}]}`
	if si, err := api.ParseServiceFile([]byte(execOK)); err != nil || si.Checks[0].Kind != "exec" || len(si.Checks[0].Exec.Argv) != 5 || si.Checks[0].Exec.TimeoutStatus.Name() != "unknown" {
		t.Fatalf("exec: %+v %v", si, err)
	}

	jsonOK := `{"name":"db","id":"db-1","checks":[{"id":"tcp","tcp":{"address":"127.0.0.1:5432"},"interval":"1s"}]}`
	if si, err := api.ParseServiceFile([]byte(jsonOK)); err != nil || si.Checks[0].TimeoutMs != 1000 {
		t.Fatalf("JSON: %+v %v", si, err)
	}

	kinds := `
name: all
id: a-1
checks:
  - {id: dns, dns: {server: "127.0.0.1:53", name: db.example., type: srv, expect: ["0 5 5432 db1.example."]}}
  - {id: grpc, grpc: {address: "127.0.0.1:9090", service: users}}
  - {id: tls, kind: https, http: {url: "https://127.0.0.1:8443/", body_regex: "^ok", cert_expiry_warn_days: 14}}
  - {id: banner, tcp: {address: "127.0.0.1:25", expect: "220 "}}
  - {id: backup, kind: passive, ttl: 26h}
`
	si, err = api.ParseServiceFile([]byte(kinds))
	if err == nil || !strings.Contains(err.Error(), "passive ttl") {
		t.Fatalf("a passive ttl above 24h must be refused by the app's rules, got %v", err)
	}
	si, err = api.ParseServiceFile([]byte(strings.Replace(kinds, "26h", "25m", 1)))
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]string{}
	for _, c := range si.Checks {
		byID[c.Id] = c.Kind
	}
	if byID["dns"] != "dns" || byID["grpc"] != "grpc" || byID["tls"] != "http" || byID["banner"] != "tcp" || byID["backup"] != "passive" {
		t.Fatalf("kinds: %v", byID)
	}
	if d := si.Checks[0].Dns; d.Type != "SRV" || d.Expect[0] != "0 5 5432 db1.example." {
		t.Fatalf("dns params: %+v", d)
	}
	if p := si.Checks[4]; p.TtlMs != 25*60*1000 || p.IntervalMs != 0 || p.TimeoutMs != 0 {
		t.Fatalf("passive timing: %+v", p)
	}
	if h := si.Checks[2].Http; h.BodyRegex != "^ok" || h.CertExpiryWarnDays != 14 {
		t.Fatalf("http params: %+v", h)
	}

	bad := []struct{ name, file, want string }{
		{"passive without ttl", `{name: web, id: w, checks: [{id: p, kind: passive}]}`, "passive check needs ttl"},
		{"passive with interval", `{name: web, id: w, checks: [{id: p, kind: passive, ttl: 1m, interval: 10s}]}`, "no interval or timeout"},
		{"passive with a probe", `{name: web, id: w, checks: [{id: p, kind: passive, ttl: 1m, tcp: {address: "a:1"}}]}`, "must not carry tcp"},
		{"two probes", `{name: web, id: w, checks: [{id: p, tcp: {address: "a:1"}, grpc: {address: "a:1"}}]}`, "several probes given (grpc, tcp)"},
		{"bad regex", `{name: web, id: w, checks: [{id: h, http: {url: "http://a/", body_regex: "("}}]}`, "body_regex"},
		{"dns type", `{name: web, id: w, checks: [{id: d, dns: {server: "a:53", name: x, type: MX}}]}`, `dns type "MX"`},
		{"dns server", `{name: web, id: w, checks: [{id: d, dns: {server: "a", name: x}}]}`, `dns server "a"`},
		{"dns name", `{name: web, id: w, checks: [{id: d, dns: {server: "a:53"}}]}`, "without a name"},
		{"grpc address", `{name: web, id: w, checks: [{id: g, grpc: {address: "a:0"}}]}`, `grpc address "a:0"`},
		{"unknown field", `{name: web, id: w, colour: red}`, "colour"},
		{"no name", `{id: w}`, "name and id are required"},
		{"interval below 1s", `{name: web, id: w, checks: [{id: h, tcp: {address: "a:1"}, interval: 500ms}]}`, "interval 500ms below 1s"},
		{"timeout above interval", `{name: web, id: w, checks: [{id: h, tcp: {address: "a:1"}, interval: 10s, timeout: 20s}]}`, "timeout 20s above interval 10s"},
		{"bad url", `{name: web, id: w, checks: [{id: h, http: {url: "x"}}]}`, `http url "x"`},
		{"tcp address", `{name: web, id: w, checks: [{id: h, tcp: {address: "nohost"}}]}`, `tcp address "nohost"`},
		{"unknown kind", `{name: web, id: w, checks: [{id: h, kind: foo}]}`, `unknown check kind "foo"`},
		{"no probe", `{name: web, id: w, checks: [{id: h}]}`, "no probe given"},
		{"exec without argv", `{name: web, id: w, checks: [{id: h, exec: {argv: []}}]}`, "needs exec"},
		{"exec relative path", `{name: web, id: w, checks: [{id: h, exec: {argv: [check_tcp]}}]}`, "absolute path"},
		{"exec bad timeout status", `{name: web, id: w, checks: [{id: h, exec: {argv: [/bin/true], timeout_status: stale}}]}`, "timeout_status"},
		{"bad duration", `{name: web, id: w, checks: [{id: h, tcp: {address: "a:1"}, interval: soon}]}`, `interval "soon"`},
		{"duplicate check", `{name: web, id: w, checks: [{id: h, tcp: {address: "a:1"}}, {id: h, tcp: {address: "a:1"}}]}`, "used twice"},
		{"bad port", `{name: web, id: w, port: 70000}`, "port 70000"},
		{"not yaml", "\t{{", "service file"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := api.ParseServiceFile([]byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestExampleServiceFile keeps docs/service.example.yaml valid.
func TestExampleServiceFile(t *testing.T) {
	data, err := os.ReadFile("../docs/service.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	si, err := api.ParseServiceFile(data)
	if err != nil {
		t.Fatalf("docs/service.example.yaml: %v", err)
	}
	if len(si.Checks) != 3 {
		t.Fatalf("example has %d checks, want 3", len(si.Checks))
	}
}
