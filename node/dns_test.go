package node_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// tcpTarget is a real TCP server for a tcp check: it accepts and closes
// connections until stopped.
func tcpTarget(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dnsAnswer asks the node's DNS interface and writes the answer as
// "RCODE rr; rr" (A: the address; SRV: priority port target).
func dnsAnswer(addr, network, name string, qtype uint16) (string, error) {
	c := &mdns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(new(mdns.Msg).SetQuestion(name, qtype), addr)
	if err != nil {
		return "", err
	}
	var rrs []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *mdns.A:
			rrs = append(rrs, v.A.String())
		case *mdns.SRV:
			rrs = append(rrs, fmt.Sprintf("%d %d %s", v.Priority, v.Port, v.Target))
		default:
			rrs = append(rrs, rr.String())
		}
	}
	return strings.TrimSpace(mdns.RcodeToString[r.Rcode] + " " + strings.Join(rrs, "; ")), nil
}

// TestNodeDNS runs a real node with its DNS interface (on a port it picks)
// and real TCP servers as the targets of tcp checks of instances in two
// datacenters: DNS lists the agreed-passing ones, the observer's
// datacenter first, over UDP and TCP; an instance whose server stops
// leaves the answers once the network agrees it is critical; with none
// passing the name is NODATA, and an unknown one NXDOMAIN.
func TestNodeDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	home, httpAddr := t.TempDir(), freeAddr(t)
	if err := node.Init(node.InitOptions{
		Home: home, ChainID: "dns-chain", HTTPAddr: httpAddr, DNSAddr: "127.0.0.1:0",
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond,
	}); err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(ctx, node.Config{Home: home, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	dnsAddr := n.DNSAddr()
	if _, port, _ := net.SplitHostPort(dnsAddr); port == "" || port == "0" {
		t.Fatalf("DNSAddr %q: want the bound address", dnsAddr)
	}
	op, err := keys.Load(filepath.Join(home, node.OperatorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c := api.NewClient(httpAddr)

	// The node's observer is in dc1 (bftmon init's default); web-2 is in
	// dc2, which the observer measures, so it ranks second.
	t1, t2 := tcpTarget(t), tcpTarget(t)
	for _, in := range []struct {
		id, dc, addr string
		target       net.Listener
		tags         []string
	}{{"web-1", "dc1", "10.0.0.1", t1, []string{"primary"}}, {"web-2", "dc2", "10.0.0.2", t2, nil}} {
		inst := types.ServiceInstance{Name: "web", Id: in.id, Address: in.addr, Port: 8080, Datacenter: in.dc, Tags: in.tags,
			Checks: []types.Check{{Id: "tcp", Kind: "tcp", Tcp: &types.TCPParams{Address: in.target.Addr().String()},
				IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}}}
		if _, err := c.Register(ctx, op.Private, inst); err != nil {
			t.Fatal(err)
		}
	}

	// waitAnswer waits until every transport gives want for name/qtype.
	waitAnswer := func(what, name string, qtype uint16, want string) {
		t.Helper()
		waitFor(t, what, 30*time.Second, func() (bool, error) {
			for _, network := range []string{"udp", "tcp"} {
				got, err := dnsAnswer(dnsAddr, network, name, qtype)
				if err != nil {
					return false, err
				}
				if got != want {
					return false, fmt.Errorf("%s over %s: %q, want %q", name, network, got, want)
				}
			}
			return true, nil
		})
	}
	waitAnswer("both instances agreed passing in SRV, own datacenter first", "web.service.bftmon.", mdns.TypeSRV,
		"NOERROR 1 8080 0a000001.addr.bftmon.; 2 8080 0a000002.addr.bftmon.")
	for _, q := range []struct {
		name  string
		qtype uint16
		want  string
	}{
		{"web.service.bftmon.", mdns.TypeA, "NOERROR 10.0.0.1; 10.0.0.2"},
		{"primary.web.service.bftmon.", mdns.TypeA, "NOERROR 10.0.0.1"},
		{"_web._tcp.service.bftmon.", mdns.TypeSRV, "NOERROR 1 8080 0a000001.addr.bftmon.; 2 8080 0a000002.addr.bftmon."},
		{"0a000002.addr.bftmon.", mdns.TypeA, "NOERROR 10.0.0.2"},
		{"nope.service.bftmon.", mdns.TypeA, "NXDOMAIN"},
		{"example.com.", mdns.TypeA, "REFUSED"},
	} {
		for _, network := range []string{"udp", "tcp"} {
			if got, err := dnsAnswer(dnsAddr, network, q.name, q.qtype); err != nil || got != q.want {
				t.Errorf("%s %s over %s: %q (%v), want %q", q.name, mdns.TypeToString[q.qtype], network, got, err, q.want)
			}
		}
	}

	// web-1's server stops: once the network agrees it is critical it
	// leaves every answer, and web-2 becomes the nearest.
	t1.Close()
	waitAnswer("web-1 gone from A once critical", "web.service.bftmon.", mdns.TypeA, "NOERROR 10.0.0.2")
	if got, err := dnsAnswer(dnsAddr, "udp", "web.service.bftmon.", mdns.TypeSRV); err != nil || got != "NOERROR 1 8080 0a000002.addr.bftmon." {
		t.Fatalf("SRV after web-1 turned critical: %q (%v)", got, err)
	}
	insts, _, err := c.Service(ctx, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, in := range insts {
		statuses = append(statuses, in.ID+"="+in.Status)
	}
	if !slices.Equal(statuses, []string{"web-1=critical", "web-2=passing"}) {
		t.Fatalf("agreed state %v: DNS must follow it", statuses)
	}
	if got, err := dnsAnswer(dnsAddr, "tcp", "primary.web.service.bftmon.", mdns.TypeA); err != nil || got != "NOERROR" {
		t.Fatalf("tag of the critical instance only: %q (%v), want NODATA", got, err)
	}

	// None passing: the service still exists, so NODATA, not NXDOMAIN.
	t2.Close()
	waitAnswer("no passing instance left", "web.service.bftmon.", mdns.TypeA, "NOERROR")

	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := dnsAnswer(dnsAddr, "tcp", "web.service.bftmon.", mdns.TypeA); err == nil {
		t.Fatal("DNS still answers over TCP after the node stopped")
	}
}
