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
	typ := strings.ToUpper(p.Type)
	if typ == "" {
		typ = "A"
	}
	qtype, ok := dnsTypes[typ]
	if !ok {
		return nil, fmt.Errorf("dns: type %q: want A, AAAA, SRV or TXT", p.Type)
	}
	expect := make([]string, len(p.Expect))
	for i, e := range p.Expect {
		expect[i] = normalAnswer(qtype, e)
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
	resp, _, err := (&dns.Client{Net: "udp"}).ExchangeContext(ctx, q, d.server)
	if err == nil && resp.Truncated {
		resp, _, err = (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, q, d.server)
	}
	lat := time.Since(start)
	if err != nil {
		var oerr *net.OpError
		if errors.As(err, &oerr) {
			err = oerr.Err
		}
		return failure(ctx, lat, what, err)
	}
	if resp.Rcode != dns.RcodeSuccess {
		return result(types.STATUS_CRITICAL, lat, what+": "+dns.RcodeToString[resp.Rcode])
	}
	var got []string
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype == d.qtype {
			got = append(got, answerText(rr))
		}
	}
	if len(got) == 0 {
		return result(types.STATUS_CRITICAL, lat, what+": no "+dns.TypeToString[d.qtype]+" answer")
	}
	answers := strings.Join(got, ", ")
	for _, e := range d.expect {
		if !slices.Contains(got, e) {
			return result(types.STATUS_CRITICAL, lat, fmt.Sprintf("%s: %q not among the answers (%s)", what, e, answers))
		}
	}
	return result(types.STATUS_PASSING, lat, what+": "+answers)
}

// answerText writes an answer the way an expectation is written: an
// address, "priority weight port target." for SRV, the text for TXT.
func answerText(rr dns.RR) string {
	switch r := rr.(type) {
	case *dns.A:
		return r.A.String()
	case *dns.AAAA:
		return r.AAAA.String()
	case *dns.SRV:
		return fmt.Sprintf("%d %d %d %s", r.Priority, r.Weight, r.Port, strings.ToLower(dns.Fqdn(r.Target)))
	case *dns.TXT:
		return strings.Join(r.Txt, "")
	}
	return rr.String()
}

// normalAnswer writes an expected answer as answerText would: addresses in
// their canonical form, SRV targets lower-case and fully qualified.
func normalAnswer(qtype uint16, s string) string {
	switch qtype {
	case dns.TypeA, dns.TypeAAAA:
		if ip, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
			return ip.String()
		}
	case dns.TypeSRV:
		f := strings.Fields(s)
		if len(f) == 4 {
			for _, n := range f[:3] {
				if _, err := strconv.ParseUint(n, 10, 16); err != nil {
					return s
				}
			}
			return strings.Join(f[:3], " ") + " " + strings.ToLower(dns.Fqdn(f[3]))
		}
	}
	return s
}
