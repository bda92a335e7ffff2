// Package dns is bftmon's DNS interface (SPEC §6): NAME.service.bftmon.
// answers with the agreed-passing instances of a service, nearest
// datacenter first, read from the node's last committed state.
//
// Names under the zone (default "bftmon."):
//
//	NAME.service.ZONE          A, AAAA, ANY, SRV: passing instances of NAME
//	TAG.NAME.service.ZONE      the same, only instances tagged TAG
//	_NAME._TAG.service.ZONE    RFC 2782 form; _tcp or _udp as TAG: no tag filter
//	HEX.addr.ZONE              A (8 hex digits) or AAAA (32): the address itself,
//	                           the targets of SRV answers for IP addresses
//	ZONE                       SOA, NS
//	ns.ZONE                    A/AAAA of the listening address, if specific
//
// An unknown service or name is NXDOMAIN, a known service without a
// passing instance is NOERROR without answers, and a name outside the zone
// is REFUSED. Negative answers carry the zone's SOA, whose serial is the
// committed height.
package dns

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// Defaults of Config.
const (
	// DefaultAddr is where the server listens unless told otherwise:
	// Consul's DNS port, on loopback.
	DefaultAddr = "127.0.0.1:8600"
	// DefaultDomain is the zone served unless told otherwise.
	DefaultDomain = "bftmon."
)

// ednsSize is the UDP payload size the server advertises in its EDNS0 OPT
// record (the DNS Flag Day 2020 value, safe from fragmentation).
const ednsSize = 1232

// SOA timers. Nothing transfers this zone; they only need to be sane.
const (
	soaRefresh = 3600
	soaRetry   = 600
	soaExpire  = 86400
)

// Source gives the state to answer from: the last committed version. The
// node's backend is one.
type Source interface {
	Read() (*app.Query, error)
}

// Config says where the server listens and how it answers.
type Config struct {
	// Addr is the host:port that both UDP and TCP listen on (DefaultAddr
	// if empty). Port 0 picks a free port, the same for both.
	Addr string
	// Domain is the zone served (DefaultDomain if empty), case-insensitive,
	// with or without the final dot.
	Domain string
	// Datacenter is this node's own datacenter: its instances come first,
	// then the other datacenters' nearest first (app.Find with Near), and
	// SRV priorities rank the datacenters 1, 2, …
	Datacenter string
	// Observer, when Datacenter is empty, is the id of this node's observer:
	// the own datacenter is then the one the committed observer set gives
	// it, read with each query (as /v1/status finds it). With neither,
	// there is no own datacenter: instances come by id, all with SRV
	// priority 1.
	Observer string
	// TTL of every record, in whole seconds. The default 0 makes resolvers
	// ask again every time, so a change in the agreed state is seen at once.
	TTL time.Duration
	// Registerer, if set, receives the server's metrics.
	Registerer prometheus.Registerer
}

// Server answers DNS queries over UDP and TCP on one address.
type Server struct {
	src     Source
	cfg     Config
	log     *slog.Logger
	zone    string // lower case, fully qualified
	ttl     uint32
	metrics *metrics // nil without cfg.Registerer

	mu       sync.Mutex
	udp, tcp *mdns.Server
	addr     net.Addr   // bound TCP address (the UDP one has the same port)
	nsIP     netip.Addr // listening IP for ns.ZONE, invalid if unspecified
	wg       sync.WaitGroup
	stopped  bool
}

// New returns a server answering from src; Start starts it. A nil logger
// discards.
func New(src Source, cfg Config, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	s := &Server{src: src, cfg: cfg, log: logger, zone: mdns.CanonicalName(cfg.Domain)}
	if cfg.TTL > 0 {
		s.ttl = uint32(cfg.TTL / time.Second)
	}
	if cfg.Registerer != nil {
		s.metrics = newMetrics(cfg.Registerer)
	}
	return s
}

// Start binds UDP and TCP on the configured address and serves until
// Shutdown. It returns once both listen, or with why they cannot.
func (s *Server) Start(ctx context.Context) error {
	if _, ok := mdns.IsDomainName(s.zone); !ok || s.zone == "." {
		return fmt.Errorf("DNS: domain %q is not a domain name", s.cfg.Domain)
	}
	ln, pc, err := listen(ctx, s.cfg.Addr)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.addr = ln.Addr()
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && !ap.Addr().IsUnspecified() {
		s.nsIP = ap.Addr().Unmap()
	}
	s.udp = &mdns.Server{PacketConn: pc, Handler: s}
	s.tcp = &mdns.Server{Listener: ln, Handler: s, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	servers := []*mdns.Server{s.udp, s.tcp}
	s.mu.Unlock()

	started := make(chan struct{}, len(servers))
	failed := make(chan error, len(servers))
	for _, srv := range servers {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				failed <- err
				s.log.Error("DNS server stopped", "addr", s.Addr(), "err", err)
			}
		}()
	}
	for range servers {
		select {
		case <-started:
		case err := <-failed:
			s.abort(ln, pc)
			return fmt.Errorf("DNS: serve on %s: %w", s.Addr(), err)
		case <-ctx.Done():
			s.abort(ln, pc)
			return ctx.Err()
		}
	}
	s.log.Info("DNS interface listening", "addr", s.Addr(), "domain", s.zone)
	return nil
}

// abort undoes a Start that could not finish: closing the sockets first
// ends a server still on its way to serving.
func (s *Server) abort(ln net.Listener, pc net.PacketConn) {
	ln.Close()
	pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.Shutdown(ctx)
}

// listen binds TCP on addr, then UDP on the same address and port. When
// addr asks for any port (0), a port whose UDP side is taken is given up
// for another.
func listen(ctx context.Context, addr string) (net.Listener, net.PacketConn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("DNS: address %q: %w", addr, err)
	}
	var lc net.ListenConfig
	for attempt := 0; ; attempt++ {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("DNS: listen on tcp %s: %w", addr, err)
		}
		pc, err := lc.ListenPacket(ctx, "udp", ln.Addr().String())
		if err == nil {
			return ln, pc, nil
		}
		ln.Close()
		if port != "0" || attempt == 10 {
			return nil, nil, fmt.Errorf("DNS: listen on udp %s: %w", addr, err)
		}
	}
}

// Addr is the address the server listens on (TCP and UDP), once started;
// before, the configured one.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr == nil {
		return s.cfg.Addr
	}
	return s.addr.String()
}

// Shutdown stops listening and waits, within ctx, for the queries being
// answered. It is safe to call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped || s.udp == nil {
		s.stopped = true
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	servers := []*mdns.Server{s.udp, s.tcp}
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		// A server that never started has nothing to stop.
		if err := srv.ShutdownContext(ctx); err != nil && !strings.Contains(err.Error(), "not started") {
			errs = append(errs, err)
		}
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("DNS: shutdown: %w", err)
	}
	return nil
}

// ServeDNS answers one query; it makes Server an mdns.Handler.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	start := time.Now()
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	resp := s.respond(req, tcp)
	transport := "udp"
	if tcp {
		transport = "tcp"
	}
	rcode := mdns.RcodeToString[resp.Rcode]
	if s.metrics != nil {
		s.metrics.queries.WithLabelValues(transport, rcode).Inc()
		if resp.Truncated {
			s.metrics.truncated.Inc()
		}
	}
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("DNS: write answer", "client", w.RemoteAddr().String(), "err", err)
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		var name, qtype string
		if len(req.Question) > 0 {
			name, qtype = req.Question[0].Name, mdns.TypeToString[req.Question[0].Qtype]
		}
		s.log.Debug("DNS query", "name", name, "type", qtype, "transport", transport, "client", w.RemoteAddr().String(),
			"rcode", rcode, "answers", len(resp.Answer), "truncated", resp.Truncated, "took", time.Since(start))
	}
}

// respond builds the answer to req and fits it in what the transport
// carries: over UDP the client's EDNS0 buffer size or 512 bytes, over TCP
// 64 KiB. What does not fit is left out and the TC bit set, so that the
// client asks again over TCP.
func (s *Server) respond(req *mdns.Msg, tcp bool) *mdns.Msg {
	opt := req.IsEdns0()
	if opt != nil && opt.Version() != 0 {
		resp := new(mdns.Msg).SetRcode(req, mdns.RcodeBadVers)
		resp.SetEdns0(ednsSize, false)
		return resp
	}
	resp := s.answer(req)
	size := mdns.MinMsgSize
	if opt != nil {
		resp.SetEdns0(ednsSize, false)
		size = max(size, int(opt.UDPSize()))
	}
	if tcp {
		size = mdns.MaxMsgSize
	}
	resp.Truncate(size)
	return resp
}

// answer builds the full answer to req.
func (s *Server) answer(req *mdns.Msg) *mdns.Msg {
	resp := new(mdns.Msg).SetReply(req)
	if len(req.Question) != 1 {
		return resp.SetRcode(req, mdns.RcodeFormatError)
	}
	q := req.Question[0]
	name := mdns.CanonicalName(q.Name)
	if !mdns.IsSubDomain(s.zone, name) || q.Qclass != mdns.ClassINET && q.Qclass != mdns.ClassANY {
		return resp.SetRcode(req, mdns.RcodeRefused)
	}
	resp.Authoritative = true
	query, err := s.src.Read()
	if err != nil {
		s.log.Warn("DNS: read the committed state", "name", q.Name, "err", err)
		return resp.SetRcode(req, mdns.RcodeServerFailure)
	}
	r := &reply{s: s, q: q, query: query, msg: resp}
	labels := mdns.SplitDomainName(strings.TrimSuffix(name, s.zone))
	if err := r.resolve(labels); err != nil {
		s.log.Warn("DNS: answer", "name", q.Name, "err", err)
		return new(mdns.Msg).SetRcode(req, mdns.RcodeServerFailure)
	}
	if resp.Rcode == mdns.RcodeNameError || resp.Rcode == mdns.RcodeSuccess && len(resp.Answer) == 0 {
		resp.Ns = append(resp.Ns, r.soa())
	}
	return resp
}

// reply is one answer being built.
type reply struct {
	s     *Server
	q     mdns.Question
	query *app.Query
	msg   *mdns.Msg
}

// resolve answers for the labels of the query name below the zone, lower
// case.
func (r *reply) resolve(labels []string) error {
	n := len(labels)
	switch {
	case n == 0:
		r.apex()
	case n == 1 && (labels[0] == "service" || labels[0] == "addr"):
		// Empty non-terminals: names exist below them (RFC 8020), so NODATA.
	case n == 1 && labels[0] == "ns":
		r.nsAddress()
	case n == 2 && labels[1] == "addr":
		r.addr(labels[0])
	case n == 2 && labels[1] == "service":
		return r.service(labels[0], "")
	case n == 3 && labels[2] == "service":
		if strings.HasPrefix(labels[0], "_") && strings.HasPrefix(labels[1], "_") {
			// RFC 2782: _NAME._PROTO; as in Consul, a protocol is no tag.
			name, tag := labels[0][1:], labels[1][1:]
			if tag == "tcp" || tag == "udp" {
				tag = ""
			}
			return r.service(name, tag)
		}
		return r.service(labels[1], labels[0])
	default:
		r.msg.Rcode = mdns.RcodeNameError
	}
	return nil
}

// hdr is the header of a record of type t named name.
func (r *reply) hdr(name string, t uint16) mdns.RR_Header {
	return mdns.RR_Header{Name: name, Rrtype: t, Class: mdns.ClassINET, Ttl: r.s.ttl}
}

func (r *reply) soa() *mdns.SOA {
	return &mdns.SOA{Hdr: r.hdr(r.s.zone, mdns.TypeSOA), Ns: "ns." + r.s.zone, Mbox: "hostmaster." + r.s.zone,
		Serial: uint32(r.query.Info().Height), Refresh: soaRefresh, Retry: soaRetry, Expire: soaExpire, Minttl: r.s.ttl}
}

func (r *reply) ns() *mdns.NS {
	return &mdns.NS{Hdr: r.hdr(r.s.zone, mdns.TypeNS), Ns: "ns." + r.s.zone}
}

func (r *reply) apex() {
	switch r.q.Qtype {
	case mdns.TypeSOA:
		r.msg.Answer = append(r.msg.Answer, r.soa())
	case mdns.TypeNS:
		r.msg.Answer = append(r.msg.Answer, r.ns())
		r.msg.Extra = append(r.msg.Extra, r.addrRecords("ns."+r.s.zone, r.s.nsIP, mdns.TypeANY)...)
	case mdns.TypeANY:
		r.msg.Answer = append(r.msg.Answer, r.soa(), r.ns())
	}
}

// nsAddress answers for ns.ZONE: the listening address, when it is a
// specific one.
func (r *reply) nsAddress() {
	r.msg.Answer = append(r.msg.Answer, r.addrRecords(r.q.Name, r.s.nsIP, r.q.Qtype)...)
}

// addr answers for HEX.addr.ZONE.
func (r *reply) addr(label string) {
	ip, ok := parseAddrLabel(label)
	if !ok {
		r.msg.Rcode = mdns.RcodeNameError
		return
	}
	r.msg.Answer = append(r.msg.Answer, r.addrRecords(r.q.Name, ip, r.q.Qtype)...)
}

// addrRecords is the A or AAAA record of ip named name if qtype asks for
// it (ANY asks for both); none for an invalid ip.
func (r *reply) addrRecords(name string, ip netip.Addr, qtype uint16) []mdns.RR {
	switch {
	case ip.Is4() && (qtype == mdns.TypeA || qtype == mdns.TypeANY):
		return []mdns.RR{&mdns.A{Hdr: r.hdr(name, mdns.TypeA), A: ip.AsSlice()}}
	case ip.Is6() && (qtype == mdns.TypeAAAA || qtype == mdns.TypeANY):
		return []mdns.RR{&mdns.AAAA{Hdr: r.hdr(name, mdns.TypeAAAA), AAAA: ip.AsSlice()}}
	}
	return nil
}

// endpoint is an instance as DNS gives it: an IP address or a host name,
// with its port and the rank of its datacenter.
type endpoint struct {
	ip       netip.Addr // valid for an IP address
	host     string     // fully qualified, for a host name
	port     uint16
	priority uint16
}

// service answers for the passing instances of service name (tag: only
// those carrying it, case-insensitively).
func (r *reply) service(name, tag string) error {
	near := r.s.cfg.Datacenter
	if near == "" && r.s.cfg.Observer != "" {
		for _, ob := range r.query.Observers() {
			if ob.Id == r.s.cfg.Observer {
				near = ob.Datacenter
			}
		}
	}
	insts, err := r.query.Find(name, app.Filter{Statuses: []types.Status{types.STATUS_PASSING}, Near: near})
	if errors.Is(err, app.ErrNotFound) {
		r.msg.Rcode = mdns.RcodeNameError
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	eps := endpoints(insts, tag, near != "")
	switch r.q.Qtype {
	case mdns.TypeA, mdns.TypeAAAA, mdns.TypeANY:
		r.addresses(eps)
	case mdns.TypeSRV:
		r.srv(eps)
	}
	return nil
}

// endpoints turns the instances, in order, into endpoints: those carrying
// tag (any, if empty) and with an address DNS can give. With ranked, the
// instances are grouped by datacenter, nearest first, and each group gets
// the next SRV priority; without, all have priority 1.
func endpoints(insts []app.InstanceView, tag string, ranked bool) []endpoint {
	var eps []endpoint
	var rank uint16
	lastDC := ""
	for i := range insts {
		si := &insts[i].Instance
		if tag != "" && !hasTag(si.Tags, tag) {
			continue
		}
		ep := endpoint{port: uint16(si.Port)}
		if ip, err := netip.ParseAddr(si.Address); err == nil {
			ep.ip = ip.WithZone("").Unmap()
		} else if h, ok := hostname(si.Address); ok {
			ep.host = h
		} else {
			continue // no address, or not one DNS can carry
		}
		if rank == 0 || ranked && si.Datacenter != lastDC {
			rank++
			lastDC = si.Datacenter
		}
		ep.priority = rank
		eps = append(eps, ep)
	}
	return eps
}

func hasTag(tags []string, tag string) bool {
	for _, t := range tags {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

// addresses answers an A, AAAA or ANY query: the instances' addresses of
// the family asked for, each once. A service whose instances have none of
// them but host names gets a CNAME to the nearest one (a name holds one
// CNAME and nothing else, RFC 2181 §10.1); its SRV records list them all.
func (r *reply) addresses(eps []endpoint) {
	seen := map[netip.Addr]bool{}
	for _, ep := range eps {
		if ep.ip.IsValid() && !seen[ep.ip] {
			rrs := r.addrRecords(r.q.Name, ep.ip, r.q.Qtype)
			if len(rrs) > 0 {
				seen[ep.ip] = true
				r.msg.Answer = append(r.msg.Answer, rrs...)
			}
		}
	}
	if len(r.msg.Answer) > 0 {
		return
	}
	for _, ep := range eps {
		if ep.host != "" {
			r.msg.Answer = append(r.msg.Answer, &mdns.CNAME{Hdr: r.hdr(r.q.Name, mdns.TypeCNAME), Target: ep.host})
			return
		}
	}
}

// srv answers an SRV query: one record per instance, weight 1, priority
// by datacenter rank, the target an addr name (its address in the
// additional section) or the instance's host name.
func (r *reply) srv(eps []endpoint) {
	seen := map[string]bool{}
	for _, ep := range eps {
		target := ep.host
		if ep.ip.IsValid() {
			target = addrLabel(ep.ip) + ".addr." + r.s.zone
			if !seen[target] {
				seen[target] = true
				r.msg.Extra = append(r.msg.Extra, r.addrRecords(target, ep.ip, mdns.TypeANY)...)
			}
		}
		r.msg.Answer = append(r.msg.Answer, &mdns.SRV{Hdr: r.hdr(r.q.Name, mdns.TypeSRV),
			Priority: ep.priority, Weight: 1, Port: ep.port, Target: target})
	}
}

// addrLabel is the label of ip's addr name: the hex of its 4 or 16 bytes.
func addrLabel(ip netip.Addr) string { return hex.EncodeToString(ip.AsSlice()) }

// parseAddrLabel is the inverse of addrLabel.
func parseAddrLabel(label string) (netip.Addr, bool) {
	if len(label) != 8 && len(label) != 32 {
		return netip.Addr{}, false
	}
	b, err := hex.DecodeString(label)
	if err != nil {
		return netip.Addr{}, false
	}
	return netip.AddrFromSlice(b)
}

// hostname returns s as a fully qualified, lower-case host name, if it is
// one: dot-separated labels of 1 to 63 letters, digits, '-' or '_', at
// most 253 characters.
func hostname(s string) (string, bool) {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if s == "" || len(s) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return "", false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return s + ".", true
}

// metrics count the queries answered.
type metrics struct {
	queries   *prometheus.CounterVec
	truncated prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bftmon_dns_queries_total",
			Help: "DNS queries answered, by transport (udp, tcp) and response code.",
		}, []string{"transport", "rcode"}),
		truncated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bftmon_dns_truncated_total",
			Help: "DNS answers that did not fit and were sent truncated (TC), for the client to ask again over TCP.",
		}),
	}
	reg.MustRegister(m.queries, m.truncated)
	return m
}
