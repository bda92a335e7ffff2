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
		"alias.test.":      {"alias.test. 60 IN CNAME web.test."},
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
			if rr.Header().Rrtype == q.Question[0].Qtype || rr.Header().Rrtype == dns.TypeCNAME {
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

// silentUDP is a local UDP port that reads queries and never answers; each
// query read is announced on the returned channel, if there is room.
func silentUDP(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	asked := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case asked <- struct{}{}:
			default:
			}
		}
	}()
	return pc.LocalAddr().String(), asked
}

func TestDNSProbe(t *testing.T) {
	server := dnsServer(t)
	silent, _ := silentUDP(t)
	closed, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()

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
		{"A all expected, fully qualified name", types.DNSParams{Name: "web.test.", Expect: []string{"192.0.2.11", " 192.0.2.10"}}, 0, types.STATUS_PASSING, "192.0.2.10, 192.0.2.11"},
		{"A expectation missing", types.DNSParams{Name: "web.test", Expect: []string{"192.0.2.10", "192.0.2.99"}}, 0, types.STATUS_CRITICAL, `"192.0.2.99" not among the answers (192.0.2.10, 192.0.2.11)`},
		{"AAAA expected, written long", types.DNSParams{Name: "web.test", Type: "aaaa", Expect: []string{"2001:0db8::0010"}}, 0, types.STATUS_PASSING, "2001:db8::10"},
		{"AAAA expectation missing", types.DNSParams{Name: "web.test", Type: "AAAA", Expect: []string{"2001:db8::11"}}, 0, types.STATUS_CRITICAL, `"2001:db8::11" not among the answers (2001:db8::10)`},
		{"SRV expected", types.DNSParams{Name: "_http._tcp.test", Type: "SRV", Expect: []string{"10 5 8080 web1.test"}}, 0, types.STATUS_PASSING, "10 5 8080 web1.test."},
		{"SRV expected, written otherwise", types.DNSParams{Name: "_http._tcp.test", Type: "srv", Expect: []string{" 010 5  8080 WEB1.Test. "}}, 0, types.STATUS_PASSING, "10 5 8080 web1.test."},
		{"SRV wrong port", types.DNSParams{Name: "_http._tcp.test", Type: "SRV", Expect: []string{"10 5 9090 web1.test."}}, 0, types.STATUS_CRITICAL, `"10 5 9090 web1.test." not among the answers (10 5 8080 web1.test.)`},
		{"TXT expected", types.DNSParams{Name: "cfg.test", Type: "TXT", Expect: []string{"v=1 region=eu"}}, 0, types.STATUS_PASSING, "v=1 region=eu"},
		{"TXT expectation missing", types.DNSParams{Name: "cfg.test", Type: "TXT", Expect: []string{"v=2"}}, 0, types.STATUS_CRITICAL, `"v=2" not among the answers (v=1 region=eu)`},
		{"truncated answer retried over TCP", types.DNSParams{Name: "big.test", Type: "TXT", Expect: []string{strings.Repeat("x", 60) + "n"}}, 0, types.STATUS_PASSING, "big.test TXT"},
		{"no record of the type", types.DNSParams{Name: "cfg.test", Type: "A"}, 0, types.STATUS_CRITICAL, "no A answer"},
		{"only another type answered", types.DNSParams{Name: "alias.test", Type: "A"}, 0, types.STATUS_CRITICAL, "no A answer (answered: alias.test. 60 IN CNAME web.test.)"},
		{"NXDOMAIN", types.DNSParams{Name: "nope.test"}, 0, types.STATUS_CRITICAL, "nope.test A @" + server + ": NXDOMAIN"},
		{"SERVFAIL", types.DNSParams{Name: "failing.test"}, 0, types.STATUS_CRITICAL, "SERVFAIL"},
		{"server down", types.DNSParams{Server: closed.LocalAddr().String(), Name: "web.test"}, 0, types.STATUS_CRITICAL, "web.test A @" + closed.LocalAddr().String() + ": read: connection refused"},
		{"server silent", types.DNSParams{Server: silent, Name: "web.test"}, 200, types.STATUS_CRITICAL, "web.test A @" + silent + ": timeout after 200ms"},
		// The DNS client's own 2s default must not cut a longer timeout short.
		{"server silent past 2s", types.DNSParams{Server: silent, Name: "web.test"}, 2100, types.STATUS_CRITICAL, "timeout after 2.1s"},
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
			if r.Latency <= 0 {
				t.Fatalf("latency %v not measured", r.Latency)
			}
		})
	}
}

// TestDNSProbeCancelled: a probe waiting for an answer, ended by its
// caller, stops at once (not at its minute-long timeout) and says nothing
// about the target.
func TestDNSProbeCancelled(t *testing.T) {
	silent, asked := silentUDP(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-asked
		cancel()
	}()
	c := types.Check{Id: "d", Kind: "dns", Dns: &types.DNSParams{Server: silent, Name: "web.test"}, IntervalMs: 1000, TimeoutMs: 60_000}
	r := RunOnce(ctx, c)
	if r.Status != types.STATUS_UNKNOWN || !strings.Contains(r.Output, "probe ended early: context canceled") {
		t.Fatalf("got %s %q, want unknown, probe ended early", r.Status.Name(), r.Output)
	}
}

func TestDNSRefused(t *testing.T) {
	cases := []struct {
		name string
		p    types.DNSParams
		err  string
	}{
		{"server without port", types.DNSParams{Server: "nowhere", Name: "a.test"}, "dns: server: "},
		{"no name", types.DNSParams{Server: "127.0.0.1:53"}, "dns: no name to query"},
		{"bad name", types.DNSParams{Server: "127.0.0.1:53", Name: "a..test"}, `dns: name "a..test" is not a domain name`},
		{"unknown type", types.DNSParams{Server: "127.0.0.1:53", Name: "a.test", Type: "MX"}, `dns: type "MX": want A, AAAA, SRV or TXT`},
		{"A expecting a name", types.DNSParams{Server: "127.0.0.1:53", Name: "a.test", Expect: []string{"web.test"}}, `dns: expect "web.test": not an IP address`},
		{"A expecting IPv6", types.DNSParams{Server: "127.0.0.1:53", Name: "a.test", Expect: []string{"2001:db8::1"}}, "not an IPv4 address"},
		{"AAAA expecting IPv4", types.DNSParams{Server: "127.0.0.1:53", Name: "a.test", Type: "AAAA", Expect: []string{"192.0.2.1"}}, "not an IPv6 address"},
		{"SRV expecting three fields", types.DNSParams{Server: "127.0.0.1:53", Name: "a.test", Type: "SRV", Expect: []string{"10 5 web.test"}}, `want "priority weight port target"`},
		{"SRV port out of range", types.DNSParams{Server: "127.0.0.1:53", Name: "a.test", Type: "SRV", Expect: []string{"10 5 70000 web.test"}}, `want "priority weight port target"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(types.Check{Id: "d", Kind: "dns", Dns: &tc.p})
			if err == nil || !strings.HasPrefix(err.Error(), "check d: dns: ") || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("New(%+v): err = %v, want a dns error containing %q", tc.p, err, tc.err)
			}
		})
	}
}
