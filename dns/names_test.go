package dns

import (
	"net/netip"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// TestAddrLabel: addr names round-trip IPv4 and IPv6 addresses, and only
// 8 or 32 hex digits are one.
func TestAddrLabel(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.0.0.255", "::1", "2001:db8::4", "fe80::1"} {
		ip := netip.MustParseAddr(s)
		got, ok := parseAddrLabel(addrLabel(ip))
		if !ok || got != ip {
			t.Errorf("%s → %s → %v %v", s, addrLabel(ip), got, ok)
		}
	}
	if l := addrLabel(netip.MustParseAddr("127.0.0.1")); l != "7f000001" {
		t.Errorf("127.0.0.1 → %s, want 7f000001", l)
	}
	for _, bad := range []string{"", "7f00001", "7f0000011", "7f00000g", "20010db800000000000000000000000", "localhost"} {
		if ip, ok := parseAddrLabel(bad); ok {
			t.Errorf("%q parsed as %s", bad, ip)
		}
	}
}

// TestHostname: which instance addresses are host names, and their FQDN.
func TestHostname(t *testing.T) {
	for in, want := range map[string]string{
		"db.example.com":                  "db.example.com.",
		"DB.Example.COM.":                 "db.example.com.",
		"localhost":                       "localhost.",
		"_srv-1.internal":                 "_srv-1.internal.",
		"":                                "",
		"a..b":                            "",
		"has space.com":                   "",
		"10.0.0.1:80":                     "",
		"web/1":                           "",
		string(make([]byte, 64)) + ".com": "",
	} {
		got, ok := hostname(in)
		if got != want || ok != (want != "") {
			t.Errorf("hostname(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// TestEndpoints: SRV priorities rank the datacenters in the order given;
// unusable addresses and other tags are left out; without ranking all are 1.
func TestEndpoints(t *testing.T) {
	iv := func(id, dc, addr string, tags ...string) app.InstanceView {
		return app.InstanceView{Instance: types.ServiceInstance{Name: "web", Id: id, Datacenter: dc, Address: addr, Port: 80, Tags: tags}}
	}
	insts := []app.InstanceView{
		iv("a", "dc2", "10.0.0.1", "x"), iv("b", "dc2", "", "x"), iv("c", "dc2", "::ffff:10.0.0.3"),
		iv("d", "dc1", "h.example", "X"), iv("e", "dc3", "not an address", "x"), iv("f", "dc3", "fe80::1%eth0", "x"),
	}
	prio := func(eps []endpoint) []uint16 {
		var p []uint16
		for _, ep := range eps {
			p = append(p, ep.priority)
		}
		return p
	}
	eps := endpoints(insts, "", true)
	if got := prio(eps); len(got) != 4 || got[0] != 1 || got[1] != 1 || got[2] != 2 || got[3] != 3 {
		t.Fatalf("ranked priorities %v, want [1 1 2 3]", got)
	}
	if eps[1].ip != netip.MustParseAddr("10.0.0.3") || eps[2].host != "h.example." || eps[3].ip != netip.MustParseAddr("fe80::1") {
		t.Fatalf("endpoints %+v: want the mapped address unmapped, the host name qualified, the zone dropped", eps)
	}
	if got := prio(endpoints(insts, "x", true)); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Fatalf("tag x priorities %v, want [1 2 3]", got)
	}
	if got := prio(endpoints(insts, "", false)); len(got) != 4 || got[0] != 1 || got[3] != 1 {
		t.Fatalf("unranked priorities %v, want all 1", got)
	}
}
