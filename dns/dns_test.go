package dns_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/dns"
	"github.com/bftmon/bftmon/store"
)

const chainID = "dns-test"

func key(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func keyID(name string) string { return types.KeyID(key(name).Public().(ed25519.PublicKey)) }

// committed is a real application over a memory store, the DNS server's
// Source: every deliver is one executed and committed block.
type committed struct {
	t      testing.TB
	st     *store.Store
	a      *app.App
	height int64
	nonce  uint64
}

// newCommitted starts a chain with one observer per name → datacenter and
// an operator "root" allowed every service.
func newCommitted(t testing.TB, observers map[string]string) *committed {
	t.Helper()
	st := store.NewMemory()
	a, err := app.New(st)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(n string) string { return base64.StdEncoding.EncodeToString(key(n).Public().(ed25519.PublicKey)) }
	g := &app.Genesis{Operators: []app.GenesisOperator{{Name: "root", PubKey: pub("root"), Prefixes: []string{""}}}}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range observers {
			if !yield(n) {
				return
			}
		}
	}) {
		g.Observers = append(g.Observers, app.GenesisObserver{Name: name, PubKey: pub(name), Datacenter: observers[name], Weight: 1})
	}
	if err := a.InitChain(chainID, g); err != nil {
		t.Fatal(err)
	}
	return &committed{t: t, st: st, a: a}
}

// Read gives the last committed version, as the node's backend does.
func (c *committed) Read() (*app.Query, error) {
	r, err := c.st.Reader(0)
	if err != nil {
		return nil, err
	}
	return app.NewQuery(r)
}

// deliver executes one block of msgs, each its own tx signed by signer, and
// commits it; every tx must be accepted.
func (c *committed) deliver(signer string, msgs ...types.Msg) {
	c.t.Helper()
	c.height++
	c.a.BeginBlock(c.height, c.height*1000)
	for _, m := range msgs {
		c.nonce++
		tx, err := types.SignTx(chainID, key(signer), c.nonce, m)
		if err != nil {
			c.t.Fatal(err)
		}
		if log, err := c.a.DeliverTx(tx); err != nil {
			c.t.Fatalf("block %d: tx by %s refused: %v (%s)", c.height, signer, err, log)
		}
	}
	if _, _, err := c.a.EndBlock(); err != nil {
		c.t.Fatal(err)
	}
	if _, _, err := c.st.Commit(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *committed) register(insts ...types.ServiceInstance) {
	c.t.Helper()
	var msgs []types.Msg
	for _, si := range insts {
		if len(si.Checks) == 0 {
			si.Checks = []types.Check{{Id: "p", Kind: "passive", TtlMs: 3_600_000}}
		}
		msgs = append(msgs, types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: si}}})
	}
	c.deliver("root", msgs...)
}

func (c *committed) observe(observer string, obs ...types.Observation) {
	c.t.Helper()
	for i := range obs {
		if obs[i].Check == "" {
			obs[i].Check = "p"
		}
		obs[i].Output = obs[i].Status.Name()
	}
	c.deliver(observer, types.Msg{Sum: &types.Msg_Observe{Observe: &types.ObservationBatch{Observations: obs}}})
}

// webNet is the state most tests read: three observers in dc1, dc2, dc3
// (o1, o2, o3) and these instances (latencies o1/o2/o3 in ms):
//
//	web-1 dc1 10.0.0.1:8080         [primary v1] passing  1/30/25
//	web-2 dc2 10.0.0.2:8080         [v1]         passing 40/1/20
//	web-3 dc1 10.0.0.3:8080         [canary]     critical 2/50/25
//	web-4 dc3 [2001:db8::4]:8443    [v2]         passing 20/60/1
//	web-5 dc2 Web5.Example.com:9000 [V2]         passing 45/2/22
//	api-1 dc1 10.0.1.1:80                        critical
//	db-1  dc1 Db.Example.COM:5432                passing
//
// From dc1 the datacenters are dc1, dc3 (20 ms), dc2 (42.5 ms); from dc2:
// dc2, dc1 (30 ms, web-1; web-3 is not passing), dc3 (60 ms).
func webNet(t testing.TB) *committed {
	c := newCommitted(t, map[string]string{"o1": "dc1", "o2": "dc2", "o3": "dc3"})
	type row struct {
		svc, id, dc, addr string
		port              uint32
		tags              []string
		st                types.Status
		lat               [3]int64
	}
	rows := []row{
		{"web", "web-1", "dc1", "10.0.0.1", 8080, []string{"primary", "v1"}, types.STATUS_PASSING, [3]int64{1, 30, 25}},
		{"web", "web-2", "dc2", "10.0.0.2", 8080, []string{"v1"}, types.STATUS_PASSING, [3]int64{40, 1, 20}},
		{"web", "web-3", "dc1", "10.0.0.3", 8080, []string{"canary"}, types.STATUS_CRITICAL, [3]int64{2, 50, 25}},
		{"web", "web-4", "dc3", "2001:db8::4", 8443, []string{"v2"}, types.STATUS_PASSING, [3]int64{20, 60, 1}},
		{"web", "web-5", "dc2", "Web5.Example.com", 9000, []string{"V2"}, types.STATUS_PASSING, [3]int64{45, 2, 22}},
		{"api", "api-1", "dc1", "10.0.1.1", 80, nil, types.STATUS_CRITICAL, [3]int64{1, 1, 1}},
		{"db", "db-1", "dc1", "Db.Example.COM", 5432, nil, types.STATUS_PASSING, [3]int64{1, 1, 1}},
	}
	var insts []types.ServiceInstance
	for _, r := range rows {
		insts = append(insts, types.ServiceInstance{Name: r.svc, Id: r.id, Address: r.addr, Port: r.port, Datacenter: r.dc, Tags: r.tags})
	}
	c.register(insts...)
	for i, o := range []string{"o1", "o2", "o3"} {
		var obs []types.Observation
		for _, r := range rows {
			obs = append(obs, types.Observation{Service: r.svc, Instance: r.id, Status: r.st, LatencyUs: r.lat[i] * 1000})
		}
		c.observe(o, obs...)
	}
	return c
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer starts a DNS server over src on a free loopback port and
// stops it when the test ends.
func startServer(t testing.TB, src dns.Source, cfg dns.Config) *dns.Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	s := dns.New(src, cfg, testLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// query asks addr over network ("udp" or "tcp") for name/qtype, with an
// EDNS0 buffer size if edns is not 0.
func query(t testing.TB, addr, network, name string, qtype, edns uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg).SetQuestion(name, qtype)
	if edns > 0 {
		m.SetEdns0(edns, false)
	}
	c := &mdns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, mdns.TypeToString[qtype], network, err)
	}
	if r.Id != m.Id {
		t.Fatalf("answer id %d, want %d", r.Id, m.Id)
	}
	return r
}

// rr writes a record the way the tests expect it: owner only where asked.
func rr(r mdns.RR, owner bool) string {
	var s string
	switch v := r.(type) {
	case *mdns.A:
		s = "A " + v.A.String()
	case *mdns.AAAA:
		s = "AAAA " + v.AAAA.String()
	case *mdns.SRV:
		s = fmt.Sprintf("SRV %d %d %d %s", v.Priority, v.Weight, v.Port, v.Target)
	case *mdns.CNAME:
		s = "CNAME " + v.Target
	case *mdns.NS:
		s = "NS " + v.Ns
	case *mdns.SOA:
		s = fmt.Sprintf("SOA %s %s", v.Ns, v.Mbox)
	default:
		s = r.String()
	}
	if owner {
		s = r.Header().Name + " " + s
	}
	return s
}

func rrs(section []mdns.RR, owner bool) []string {
	var out []string
	for _, r := range section {
		if _, ok := r.(*mdns.OPT); ok {
			continue
		}
		out = append(out, rr(r, owner))
	}
	return out
}

const (
	srv1 = "SRV 1 1 8080 0a000001.addr.bftmon."
	a1   = "0a000001.addr.bftmon. A 10.0.0.1"
	a2   = "0a000002.addr.bftmon. A 10.0.0.2"
	aaa4 = "20010db8000000000000000000000004.addr.bftmon. AAAA 2001:db8::4"
	tgt2 = "0a000002.addr.bftmon."
	tgt4 = "20010db8000000000000000000000004.addr.bftmon."
	tgt5 = "web5.example.com."
)

// TestAnswers asks a server over UDP and TCP, from each point of view
// (own datacenter dc1; dc2 found through its observer's id; none), for
// every kind of name and checks rcode, answers in order, additional
// records, the SOA in negative answers, owner names as asked and TTL 0.
func TestAnswers(t *testing.T) {
	c := webNet(t)
	servers := map[string]string{
		"dc1":  startServer(t, c, dns.Config{Datacenter: "dc1"}).Addr(),
		"dc2":  startServer(t, c, dns.Config{Observer: keyID("o2")}).Addr(),
		"none": startServer(t, c, dns.Config{}).Addr(),
	}
	const (
		noerror  = mdns.RcodeSuccess
		nxdomain = mdns.RcodeNameError
		refused  = mdns.RcodeRefused
	)
	for _, tc := range []struct {
		name   string
		from   string // servers key; dc1 if empty
		qname  string
		qtype  uint16
		rcode  int
		answer []string // in order; nil: none
		extra  []string // with owners
	}{
		{name: "A passing only, nearest first", qname: "web.service.bftmon.", qtype: mdns.TypeA, rcode: noerror,
			answer: []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{name: "AAAA", qname: "web.service.bftmon.", qtype: mdns.TypeAAAA, rcode: noerror,
			answer: []string{"AAAA 2001:db8::4"}},
		{name: "ANY is A and AAAA", qname: "web.service.bftmon.", qtype: mdns.TypeANY, rcode: noerror,
			answer: []string{"A 10.0.0.1", "AAAA 2001:db8::4", "A 10.0.0.2"}},
		{name: "SRV ranked from dc1", qname: "web.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{srv1, "SRV 2 1 8443 " + tgt4, "SRV 3 1 8080 " + tgt2, "SRV 3 1 9000 " + tgt5},
			extra:  []string{a1, aaa4, a2}},
		{name: "SRV ranked from dc2 (observer's datacenter)", from: "dc2", qname: "web.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{"SRV 1 1 8080 " + tgt2, "SRV 1 1 9000 " + tgt5, "SRV 2 1 8080 0a000001.addr.bftmon.", "SRV 3 1 8443 " + tgt4},
			extra:  []string{a2, a1, aaa4}},
		{name: "SRV without own datacenter: by id, priority 1", from: "none", qname: "web.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{srv1, "SRV 1 1 8080 " + tgt2, "SRV 1 1 8443 " + tgt4, "SRV 1 1 9000 " + tgt5},
			extra:  []string{a1, a2, aaa4}},
		{name: "A from dc2", from: "dc2", qname: "web.service.bftmon.", qtype: mdns.TypeA, rcode: noerror,
			answer: []string{"A 10.0.0.2", "A 10.0.0.1"}},
		{name: "names are case-insensitive", qname: "WEB.Service.BFTmon.", qtype: mdns.TypeA, rcode: noerror,
			answer: []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{name: "tag", qname: "primary.web.service.bftmon.", qtype: mdns.TypeA, rcode: noerror,
			answer: []string{"A 10.0.0.1"}},
		{name: "tag shared across datacenters", qname: "v1.web.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{srv1, "SRV 2 1 8080 " + tgt2}, extra: []string{a1, a2}},
		{name: "tag case-insensitive, nearest datacenter with one is priority 1", qname: "v2.web.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{"SRV 1 1 8443 " + tgt4, "SRV 2 1 9000 " + tgt5}, extra: []string{aaa4}},
		{name: "tag of a critical instance only: NODATA", qname: "canary.web.service.bftmon.", qtype: mdns.TypeA, rcode: noerror},
		{name: "unknown tag of a known service: NODATA", qname: "nope.web.service.bftmon.", qtype: mdns.TypeA, rcode: noerror},
		{name: "RFC 2782 _tcp is no tag filter", qname: "_web._tcp.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{srv1, "SRV 2 1 8443 " + tgt4, "SRV 3 1 8080 " + tgt2, "SRV 3 1 9000 " + tgt5},
			extra:  []string{a1, aaa4, a2}},
		{name: "RFC 2782 _udp is no tag filter", qname: "_web._udp.service.bftmon.", qtype: mdns.TypeA, rcode: noerror,
			answer: []string{"A 10.0.0.1", "A 10.0.0.2"}},
		{name: "RFC 2782 with a tag", qname: "_web._primary.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{srv1}, extra: []string{a1}},
		{name: "RFC 2782 unknown service", qname: "_nope._tcp.service.bftmon.", qtype: mdns.TypeSRV, rcode: nxdomain},
		{name: "no passing instance: NODATA", qname: "api.service.bftmon.", qtype: mdns.TypeA, rcode: noerror},
		{name: "no passing instance SRV: NODATA", qname: "api.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror},
		{name: "unknown service: NXDOMAIN", qname: "nope.service.bftmon.", qtype: mdns.TypeA, rcode: nxdomain},
		{name: "other type of a known service: NODATA", qname: "web.service.bftmon.", qtype: mdns.TypeTXT, rcode: noerror},
		{name: "host name address: CNAME", qname: "db.service.bftmon.", qtype: mdns.TypeA, rcode: noerror,
			answer: []string{"CNAME db.example.com."}},
		{name: "host name address: CNAME for AAAA", qname: "db.service.bftmon.", qtype: mdns.TypeAAAA, rcode: noerror,
			answer: []string{"CNAME db.example.com."}},
		{name: "host name address: SRV target", qname: "db.service.bftmon.", qtype: mdns.TypeSRV, rcode: noerror,
			answer: []string{"SRV 1 1 5432 db.example.com."}},
		{name: "addr name A", qname: "0a000001.addr.bftmon.", qtype: mdns.TypeA, rcode: noerror, answer: []string{"A 10.0.0.1"}},
		{name: "addr name AAAA", qname: "20010DB8000000000000000000000004.addr.bftmon.", qtype: mdns.TypeAAAA, rcode: noerror,
			answer: []string{"AAAA 2001:db8::4"}},
		{name: "addr name of the other family: NODATA", qname: "0a000001.addr.bftmon.", qtype: mdns.TypeAAAA, rcode: noerror},
		{name: "bad addr name: NXDOMAIN", qname: "0a00zz01.addr.bftmon.", qtype: mdns.TypeA, rcode: nxdomain},
		{name: "apex SOA", qname: "bftmon.", qtype: mdns.TypeSOA, rcode: noerror, answer: []string{"SOA ns.bftmon. hostmaster.bftmon."}},
		{name: "apex NS with its address", qname: "bftmon.", qtype: mdns.TypeNS, rcode: noerror, answer: []string{"NS ns.bftmon."},
			extra: []string{"ns.bftmon. A 127.0.0.1"}},
		{name: "apex A: NODATA", qname: "bftmon.", qtype: mdns.TypeA, rcode: noerror},
		{name: "ns A", qname: "ns.bftmon.", qtype: mdns.TypeA, rcode: noerror, answer: []string{"A 127.0.0.1"}},
		{name: "empty non-terminal: NODATA", qname: "service.bftmon.", qtype: mdns.TypeA, rcode: noerror},
		{name: "unknown name in the zone: NXDOMAIN", qname: "www.bftmon.", qtype: mdns.TypeA, rcode: nxdomain},
		{name: "too deep: NXDOMAIN", qname: "a.b.web.service.bftmon.", qtype: mdns.TypeA, rcode: nxdomain},
		{name: "outside the zone: REFUSED", qname: "example.com.", qtype: mdns.TypeA, rcode: refused},
		{name: "zone as a suffix only: REFUSED", qname: "web.service.notbftmon.", qtype: mdns.TypeA, rcode: refused},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.name+"/"+network, func(t *testing.T) {
				from := tc.from
				if from == "" {
					from = "dc1"
				}
				r := query(t, servers[from], network, tc.qname, tc.qtype, 0)
				if r.Rcode != tc.rcode {
					t.Fatalf("rcode %s, want %s", mdns.RcodeToString[r.Rcode], mdns.RcodeToString[tc.rcode])
				}
				if r.Truncated {
					t.Fatal("truncated")
				}
				if got := rrs(r.Answer, false); !slices.Equal(got, tc.answer) {
					t.Fatalf("answer\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.answer, "\n"))
				}
				if got := rrs(r.Extra, true); !slices.Equal(got, tc.extra) {
					t.Fatalf("additional\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tc.extra, "\n"))
				}
				for _, a := range r.Answer {
					if a.Header().Name != tc.qname || a.Header().Ttl != 0 {
						t.Fatalf("answer %s: want owner %s as asked and TTL 0", a, tc.qname)
					}
				}
				negative := tc.rcode == nxdomain || tc.rcode == noerror && len(tc.answer) == 0
				switch {
				case negative:
					soa, ok := onlySOA(r.Ns)
					if !ok {
						t.Fatalf("negative answer without the zone's SOA in authority: %v", r.Ns)
					}
					if soa.Serial != uint32(c.height) || soa.Hdr.Name != "bftmon." || soa.Minttl != 0 {
						t.Fatalf("SOA %s: want serial %d (the committed height), owner bftmon., minimum 0", soa, c.height)
					}
				case len(r.Ns) != 0:
					t.Fatalf("authority %v in a positive answer", r.Ns)
				}
				if tc.rcode == refused && r.Authoritative || tc.rcode != refused && !r.Authoritative {
					t.Fatalf("authoritative %v for rcode %s", r.Authoritative, mdns.RcodeToString[r.Rcode])
				}
			})
		}
	}
}

func onlySOA(ns []mdns.RR) (*mdns.SOA, bool) {
	if len(ns) != 1 {
		return nil, false
	}
	soa, ok := ns[0].(*mdns.SOA)
	return soa, ok
}

// TestTruncation: an answer larger than 512 bytes is truncated over UDP
// with TC set and within 512 bytes, the client's EDNS0 buffer size is
// honoured, and TCP carries it all.
func TestTruncation(t *testing.T) {
	c := newCommitted(t, map[string]string{"o1": "dc1"})
	const n = 60
	var insts []types.ServiceInstance
	var obs []types.Observation
	for i := range n {
		id := fmt.Sprintf("big-%02d", i)
		insts = append(insts, types.ServiceInstance{Name: "big", Id: id, Address: fmt.Sprintf("10.1.0.%d", i+1), Port: 80, Datacenter: "dc1"})
		obs = append(obs, types.Observation{Service: "big", Instance: id, Status: types.STATUS_PASSING, LatencyUs: 1000})
	}
	c.register(insts...)
	c.observe("o1", obs...)
	addr := startServer(t, c, dns.Config{Datacenter: "dc1"}).Addr()

	for _, qtype := range []uint16{mdns.TypeA, mdns.TypeSRV} {
		r := query(t, addr, "udp", "big.service.bftmon.", qtype, 0)
		if !r.Truncated || len(r.Answer) >= n || r.Rcode != mdns.RcodeSuccess {
			t.Fatalf("%s over UDP: truncated %v with %d answers, want TC with fewer than %d", mdns.TypeToString[qtype], r.Truncated, len(r.Answer), n)
		}
		r.Compress = true // as sent
		if bz, err := r.Pack(); err != nil || len(bz) > mdns.MinMsgSize {
			t.Fatalf("%s over UDP: %d bytes (%v), want at most 512", mdns.TypeToString[qtype], len(bz), err)
		}
		r = query(t, addr, "tcp", "big.service.bftmon.", qtype, 0)
		if r.Truncated || len(r.Answer) != n {
			t.Fatalf("%s over TCP: truncated %v with %d answers, want all %d", mdns.TypeToString[qtype], r.Truncated, len(r.Answer), n)
		}
		if qtype == mdns.TypeSRV && len(r.Extra) != n {
			t.Fatalf("SRV over TCP: %d additional records, want %d", len(r.Extra), n)
		}
	}
	// 60 A records fit in a 4096-byte EDNS0 buffer.
	r := query(t, addr, "udp", "big.service.bftmon.", mdns.TypeA, 4096)
	if r.Truncated || len(r.Answer) != n || r.IsEdns0() == nil {
		t.Fatalf("A over UDP with EDNS0 4096: truncated %v, %d answers, OPT %v; want all %d with an OPT", r.Truncated, len(r.Answer), r.IsEdns0(), n)
	}
	// An EDNS0 version the server does not speak.
	m := new(mdns.Msg).SetQuestion("big.service.bftmon.", mdns.TypeA)
	m.SetEdns0(4096, false)
	m.IsEdns0().SetVersion(1)
	r, _, err := (&mdns.Client{Timeout: 5 * time.Second}).Exchange(m, addr)
	if err != nil || r.Rcode != mdns.RcodeBadVers {
		t.Fatalf("EDNS0 version 1: %v, %v; want BADVERS", r, err)
	}
}

// TestAgreedChange: a committed verdict shows in the very next answer
// (TTL 0): an instance that turns critical leaves, and comes back once
// passing again; the last one leaving makes the name NODATA, not NXDOMAIN.
func TestAgreedChange(t *testing.T) {
	c := webNet(t)
	addr := startServer(t, c, dns.Config{Datacenter: "dc1"}).Addr()
	ask := func() []string {
		return rrs(query(t, addr, "udp", "v1.web.service.bftmon.", mdns.TypeA, 0).Answer, false)
	}
	if got := ask(); !slices.Equal(got, []string{"A 10.0.0.1", "A 10.0.0.2"}) {
		t.Fatalf("before: %v", got)
	}
	set := func(id string, st types.Status) {
		for _, o := range []string{"o1", "o2", "o3"} {
			c.observe(o, types.Observation{Service: "web", Instance: id, Status: st, LatencyUs: 1000})
		}
	}
	set("web-1", types.STATUS_CRITICAL)
	if got := ask(); !slices.Equal(got, []string{"A 10.0.0.2"}) {
		t.Fatalf("web-1 critical: %v, want only 10.0.0.2", got)
	}
	set("web-2", types.STATUS_CRITICAL)
	if r := query(t, addr, "udp", "v1.web.service.bftmon.", mdns.TypeA, 0); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("both critical: %s with %v, want NODATA", mdns.RcodeToString[r.Rcode], r.Answer)
	}
	set("web-1", types.STATUS_PASSING)
	if got := ask(); !slices.Equal(got, []string{"A 10.0.0.1"}) {
		t.Fatalf("web-1 passing again: %v", got)
	}
}

// TestLifecycle: Start on port 0 gives one port for UDP and TCP, a taken
// address fails with it named, Shutdown stops answering and can be called
// twice, and metrics count the queries.
func TestLifecycle(t *testing.T) {
	c := webNet(t)
	reg := prometheus.NewRegistry()
	s := dns.New(c, dns.Config{Addr: "127.0.0.1:0", Registerer: reg}, testLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		t.Fatalf("Addr %s: want the bound port", addr)
	}
	query(t, addr, "udp", "web.service.bftmon.", mdns.TypeA, 0)
	query(t, addr, "tcp", "nope.service.bftmon.", mdns.TypeA, 0)
	query(t, addr, "udp", "example.com.", mdns.TypeA, 0)
	if got, want := counts(t, reg, "bftmon_dns_queries_total"), "rcode=NOERROR,transport=udp 1; rcode=NXDOMAIN,transport=tcp 1; rcode=REFUSED,transport=udp 1"; got != want {
		t.Fatalf("bftmon_dns_queries_total: %s, want %s", got, want)
	}

	other := dns.New(c, dns.Config{Addr: addr}, testLogger())
	if err := other.Start(ctx); err == nil || !strings.Contains(err.Error(), addr) {
		other.Shutdown(ctx)
		t.Fatalf("second server on %s: err %v, want one naming the address", addr, err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, _, err := (&mdns.Client{Net: "tcp", Timeout: time.Second}).Exchange(new(mdns.Msg).SetQuestion("web.service.bftmon.", mdns.TypeA), addr); err == nil {
		t.Fatal("answered over TCP after Shutdown")
	}
}

// counts writes the series of counter name in reg as "l=v,l=v count; …".
func counts(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out = append(out, fmt.Sprintf("%s %v", strings.Join(labels, ","), m.GetCounter().GetValue()))
		}
	}
	return strings.Join(out, "; ")
}

// TestDig asks the real dig (Debian's dnsutils) what a user would.
func TestDig(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("dig not found (apt-get install dnsutils)")
		}
		t.Fatal("dig not found: CI must install it (apt-get install dnsutils)")
	}
	c := webNet(t)
	addr := startServer(t, c, dns.Config{Datacenter: "dc1"}).Addr()
	host, port, _ := net.SplitHostPort(addr)
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, dig, append([]string{"+short", "+time=5", "+tries=1", "@" + host, "-p", port}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"web.service.bftmon"}, "10.0.0.1\n10.0.0.2"},
		{[]string{"+tcp", "web.service.bftmon"}, "10.0.0.1\n10.0.0.2"},
		{[]string{"web.service.bftmon", "AAAA"}, "2001:db8::4"},
		{[]string{"_web._tcp.service.bftmon", "SRV"}, "1 1 8080 0a000001.addr.bftmon.\n2 1 8443 " + tgt4 + "\n3 1 8080 " + tgt2 + "\n3 1 9000 " + tgt5},
		{[]string{"db.service.bftmon"}, "db.example.com."},
		{[]string{"nope.service.bftmon"}, ""},
	} {
		if got := run(tc.args...); got != tc.want {
			t.Errorf("dig +short %s:\n%s\nwant\n%s", strings.Join(tc.args, " "), got, tc.want)
		}
	}
}

// BenchmarkDNS asks for a service of 100 passing instances in two
// datacenters over UDP, from parallel clients, with a 4096-byte EDNS0
// buffer (SRV answers still drop part of their additional records and set
// TC at that size).
func BenchmarkDNS(b *testing.B) {
	c := newCommitted(b, map[string]string{"o1": "dc1", "o2": "dc2"})
	var insts []types.ServiceInstance
	var obs []types.Observation
	for i := range 100 {
		id := fmt.Sprintf("bench-%03d", i)
		insts = append(insts, types.ServiceInstance{Name: "bench", Id: id, Address: fmt.Sprintf("10.2.%d.%d", i/250, i%250+1),
			Port: 80, Datacenter: fmt.Sprintf("dc%d", i%2+1), Tags: []string{"v1"}})
		obs = append(obs, types.Observation{Service: "bench", Instance: id, Status: types.STATUS_PASSING, LatencyUs: int64(1000 + i)})
	}
	c.register(insts...)
	c.observe("o1", obs...)
	c.observe("o2", obs...)
	s := dns.New(c, dns.Config{Addr: "127.0.0.1:0", Datacenter: "dc1"}, slog.New(slog.DiscardHandler))
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	addr := s.Addr()
	for _, qtype := range []uint16{mdns.TypeSRV, mdns.TypeA} {
		b.Run(mdns.TypeToString[qtype], func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				cl := &mdns.Client{Timeout: 5 * time.Second}
				m := new(mdns.Msg).SetQuestion("bench.service.bftmon.", qtype)
				m.SetEdns0(4096, false)
				for pb.Next() {
					r, _, err := cl.Exchange(m, addr)
					if err != nil {
						b.Error(err)
						return
					}
					if len(r.Answer) != 100 {
						b.Errorf("%d answers, want 100", len(r.Answer))
						return
					}
				}
			})
		})
	}
}
