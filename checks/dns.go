package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("dns", newDNS)
}

// dnsTypes are the record types a dns check may ask for.
var dnsTypes = map[string]uint16{"A": dns.TypeA, "AAAA": dns.TypeAAAA, "SRV": dns.TypeSRV, "TXT": dns.TypeTXT}

// dnsProber asks one server for one name and type.
type dnsProber struct {
	server  string
	name    string // fully qualified
	qtype   uint16
	expect  []string
	timeout time.Duration
}

func newDNS(c types.Check) (Prober, error) {
	p := c.Dns
	if p == nil {
		return nil, errors.New("dns: no dns parameters")
	}
	if _, _, err := net.SplitHostPort(p.Server); err != nil {
		return nil, fmt.Errorf("dns: server: %w", err)
	}
	if p.Name == "" {
		return nil, errors.New("dns: no name to query")
	}
	if _, ok := dns.IsDomainName(p.Name); !ok {
		return nil, fmt.Errorf("dns: name %q is not a domain name", p.Name)
	}
	typ := strings.ToUpper(p.Type)
	if typ == "" {
		typ = "A"
	}
	qtype, ok := dnsTypes[typ]
	if !ok {
		return nil, fmt.Errorf("dns: type %q: want A, AAAA, SRV or TXT", p.Type)
	}
	expect := make([]string, len(p.Expect))
	var err error
	for i, e := range p.Expect {
		if expect[i], err = normalAnswer(qtype, e); err != nil {
			return nil, fmt.Errorf("dns: expect %q: %w", e, err)
		}
	}
	return &dnsProber{server: p.Server, name: dns.Fqdn(p.Name), qtype: qtype, expect: expect, timeout: timeoutOf(c)}, nil
}

// Probe asks over UDP, and over TCP when the answer was truncated.
func (d *dnsProber) Probe(ctx context.Context) Result {
	ctx, cancel := withTimeout(ctx, d.timeout)
	defer cancel()
	what := fmt.Sprintf("%s %s @%s", strings.TrimSuffix(d.name, "."), dns.TypeToString[d.qtype], d.server)
	q := new(dns.Msg)
	q.SetQuestion(d.name, d.qtype)
	start := time.Now()
	resp, err := d.exchange(ctx, "udp", q)
	if err == nil && resp.Truncated {
		resp, err = d.exchange(ctx, "tcp", q)
	}
	lat := time.Since(start)
	if err != nil {
		return failure(ctx, lat, what, opCause(err))
	}
	if resp.Rcode != dns.RcodeSuccess {
		return result(types.STATUS_CRITICAL, lat, what+": "+dns.RcodeToString[resp.Rcode])
	}
	var got, other []string
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == d.qtype {
			got = append(got, answerText(rr))
		} else {
			other = append(other, rr.String())
		}
	}
	if len(got) == 0 {
		out := what + ": no " + dns.TypeToString[d.qtype] + " answer"
		if len(other) > 0 {
			out += " (answered: " + strings.Join(other, ", ") + ")"
		}
		return result(types.STATUS_CRITICAL, lat, out)
	}
	answers := strings.Join(got, ", ")
	for _, e := range d.expect {
		if !slices.Contains(got, e) {
			return result(types.STATUS_CRITICAL, lat, fmt.Sprintf("%s: %q not among the answers (%s)", what, e, answers))
		}
	}
	return result(types.STATUS_PASSING, lat, what+": "+answers)
}

// exchange asks q over network ("udp" or "tcp") until ctx ends.
func (d *dnsProber) exchange(ctx context.Context, network string, q *dns.Msg) (*dns.Msg, error) {
	// The client's own timeouts (2s by default) must not cut the check's
	// shorter: ctx's deadline, never later than this, bounds the exchange.
	client := &dns.Client{Net: network, Timeout: d.timeout}
	conn, err := client.DialContext(ctx, d.server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// A probe ended from outside stops at once, not at its deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	resp, _, err := client.ExchangeWithConnContext(ctx, q, conn)
	return resp, err
}

// answerText writes an answer the way an expectation is written: an
// address, "priority weight port target." for SRV, the text for TXT.
func answerText(rr dns.RR) string {
	switch r := rr.(type) {
	case *dns.A:
		ip, _ := netip.AddrFromSlice(r.A)
		return ip.Unmap().String()
	case *dns.AAAA:
		ip, _ := netip.AddrFromSlice(r.AAAA)
		return ip.String()
	case *dns.SRV:
		return fmt.Sprintf("%d %d %d %s", r.Priority, r.Weight, r.Port, strings.ToLower(dns.Fqdn(r.Target)))
	case *dns.TXT:
		return strings.Join(r.Txt, "")
	}
	return rr.String()
}

// normalAnswer writes an expected answer as answerText would: addresses in
// their canonical form, SRV targets lower-case and fully qualified. It
// fails for an expectation no answer of the type could meet.
func normalAnswer(qtype uint16, s string) (string, error) {
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		switch {
		case err != nil:
			return "", fmt.Errorf("not an IP address: %w", err)
		case qtype == dns.TypeA && !ip.Unmap().Is4():
			return "", errors.New("not an IPv4 address")
		case qtype == dns.TypeAAAA && (!ip.Is6() || ip.Zone() != ""):
			return "", errors.New("not an IPv6 address without a zone")
		}
		if qtype == dns.TypeA {
			ip = ip.Unmap()
		}
		return ip.String(), nil
	case dns.TypeSRV:
		f := strings.Fields(s)
		if len(f) != 4 {
			return "", errors.New(`want "priority weight port target"`)
		}
		var n [3]uint64
		for i := range n {
			var err error
			if n[i], err = strconv.ParseUint(f[i], 10, 16); err != nil {
				return "", fmt.Errorf(`want "priority weight port target": %w`, err)
			}
		}
		return fmt.Sprintf("%d %d %d %s", n[0], n[1], n[2], strings.ToLower(dns.Fqdn(f[3]))), nil
	}
	return s, nil
}
