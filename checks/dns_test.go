package checks

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/bftmon/bftmon/app/types"
)

// dnsServer serves a small zone over UDP and TCP on one local port until the
// test ends; every other name is NXDOMAIN. big.test. has enough TXT
// records to be truncated over UDP.
func dnsServer(t *testing.T) string {
	t.Helper()
	zone := map[string][]string{
		"web.test.":        {"web.test. 60 IN A 192.0.2.10", "web.test. 60 IN A 192.0.2.11", "web.test. 60 IN AAAA 2001:db8::10"},
		"_http._tcp.test.": {"_http._tcp.test. 60 IN SRV 10 5 8080 Web1.Test."},
		"cfg.test.":        {`cfg.test. 60 IN TXT "v=1 " "region=eu"`},
		"failing.test.":    nil,
	}
	for i := range 40 {
		zone["big.test."] = append(zone["big.test."], "big.test. 60 IN TXT \""+strings.Repeat("x", 60)+string(rune('a'+i%26))+"\"")
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		name := strings.ToLower(q.Question[0].Name)
		records, ok := zone[name]
		switch {
		case name == "failing.test.":
			m.Rcode = dns.RcodeServerFailure
		case !ok:
			m.Rcode = dns.RcodeNameError
		}
		for _, s := range records {
			rr, err := dns.NewRR(s)
			if err != nil {
				panic(err)
			}
			if rr.Header().Rrtype == q.Question[0].Qtype {
				m.Answer = append(m.Answer, rr)
			}
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			m.Truncate(dns.MinMsgSize)
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		<-started
		t.Cleanup(func() { srv.Shutdown() })
	}
	return pc.LocalAddr().String()
}

func TestDNSProbe(t *testing.T) {
	server := dnsServer(t)
	silent, err := net.ListenPacket("udp", "127.0.0.1:0") // answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	cases := []struct {
		name    string
		p       types.DNSParams
		timeout int64
		want    types.Status
		output  string
	}{
		{"A", types.DNSParams{Name: "web.test", Type: "A"}, 0, types.STATUS_PASSING, "web.test A @" + server + ": 192.0.2.10, 192.0.2.11"},
		{"A by default", types.DNSParams{Name: "web.test"}, 0, types.STATUS_PASSING, "192.0.2.10"},
		{"A expected", types.DNSParams{Name: "web.test", Expect: []string{"192.0.2.11"}}, 0, types.STATUS_PASSING, "192.0.2.11"},
		{"A expectation missing", types.DNSParams{Name: "web.test", Expect: []string{"192.0.2.10", "192.0.2.99"}}, 0, types.STATUS_CRITICAL, `"192.0.2.99" not among the answers (192.0.2.10, 192.0.2.11)`},
		{"AAAA expected, written long", types.DNSParams{Name: "web.test", Type: "aaaa", Expect: []string{"2001:0db8::0010"}}, 0, types.STATUS_PASSING, "2001:db8::10"},
		{"SRV expected", types.DNSParams{Name: "_http._tcp.test", Type: "SRV", Expect: []string{"10 5 8080 web1.test"}}, 0, types.STATUS_PASSING, "10 5 8080 web1.test."},
		{"SRV wrong port", types.DNSParams{Name: "_http._tcp.test", Type: "SRV", Expect: []string{"10 5 9090 web1.test."}}, 0, types.STATUS_CRITICAL, "not among the answers"},
		{"TXT expected", types.DNSParams{Name: "cfg.test", Type: "TXT", Expect: []string{"v=1 region=eu"}}, 0, types.STATUS_PASSING, "v=1 region=eu"},
		{"truncated answer retried over TCP", types.DNSParams{Name: "big.test", Type: "TXT", Expect: []string{strings.Repeat("x", 60) + "n"}}, 0, types.STATUS_PASSING, "big.test TXT"},
		{"no record of the type", types.DNSParams{Name: "cfg.test", Type: "A"}, 0, types.STATUS_CRITICAL, "no A answer"},
		{"NXDOMAIN", types.DNSParams{Name: "nope.test"}, 0, types.STATUS_CRITICAL, "NXDOMAIN"},
		{"SERVFAIL", types.DNSParams{Name: "failing.test"}, 0, types.STATUS_CRITICAL, "SERVFAIL"},
		{"server silent", types.DNSParams{Server: silent.LocalAddr().String(), Name: "web.test"}, 200, types.STATUS_CRITICAL, "timeout after 200ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			if p.Server == "" {
				p.Server = server
			}
			c := types.Check{Id: "d", Kind: "dns", Dns: &p, IntervalMs: 1000, TimeoutMs: 5000}
			if tc.timeout != 0 {
				c.TimeoutMs = tc.timeout
			}
			r := RunOnce(context.Background(), c)
			if r.Status != tc.want || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status.Name(), r.Output, tc.want.Name(), tc.output)
			}
		})
	}
}

func TestDNSRefused(t *testing.T) {
	for _, p := range []types.DNSParams{
		{Server: "nowhere", Name: "a.test"},
		{Server: "127.0.0.1:53"},
		{Server: "127.0.0.1:53", Name: "a.test", Type: "MX"},
	} {
		if _, err := New(types.Check{Id: "d", Kind: "dns", Dns: &p}); err == nil || !strings.HasPrefix(err.Error(), "check d: dns: ") {
			t.Errorf("New(%+v): err = %v, want a dns error", p, err)
		}
	}
}
