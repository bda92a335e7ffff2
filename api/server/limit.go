package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Defaults of Limits. Together they bound what unauthenticated clients can
// make the server hold: MaxBodyBytes of request bodies, and per open
// connection its goroutine, buffers and at most MaxHeaderBytes of headers.
const (
	// DefaultMaxConns is well above the 1,000 parked blocking queries of
	// the interop test, and each idle connection costs a few KiB.
	DefaultMaxConns     = 2048
	DefaultMaxBodyReads = 64
	DefaultMaxBodyBytes = 64 << 20
	// DefaultBodyWait is how long a request with a body waits for a read
	// slot before it is answered 503.
	DefaultBodyWait = 2 * time.Second
	// DefaultBodyTimeout cuts a body that has not arrived in full: 1 MiB in
	// 20 s is 50 KiB/s.
	DefaultBodyTimeout = 20 * time.Second
	// DefaultReservedConns is how many connections beyond MaxConns answer
	// the status routes (Limits.ReservedConns).
	DefaultReservedConns = 16
	// MaxHeaderBytes caps a request's headers.
	MaxHeaderBytes = 64 << 10
)

// Limits bound the resources clients can hold. Zero fields take the
// defaults above.
type Limits struct {
	// MaxConns caps the open connections; further clients wait in the
	// kernel's accept queue until one closes.
	MaxConns int
	// MaxConnsPerClient caps the open connections of one client address
	// (default MaxConns/2): one more is answered 429 and closed at once,
	// so that one client's parked blocking queries or idle connections
	// never take every slot from the others (issue 22: 2,100 parked queries
	// of one client made another's /v1/status fail). Clients behind one
	// proxy share its address.
	MaxConnsPerClient int
	// ReservedConns are connections accepted beyond MaxConns once every
	// slot is taken and no idle connection could be closed to free one
	// (default DefaultReservedConns): they answer only the status routes
	// (GET /v1/status, /v1/status/leader, /v1/status/peers, /metrics),
	// every other request 503, and close after one answer, so that a
	// monitor or a load balancer still learns the node's state while
	// clients hold every slot.
	ReservedConns int
	// MaxBodyReads caps the request bodies being read at once. Requests
	// without a body (reads, blocking queries) do not count.
	MaxBodyReads int
	// MaxBodyBytes caps the bytes reserved by the bodies being read at once:
	// each reserves its Content-Length (MaxBody when unknown).
	MaxBodyBytes int64
	// BodyWait is how long a request waits for a slot before a 503 with
	// Retry-After.
	BodyWait time.Duration
	// BodyTimeout is how long a body may take to arrive once its slot is
	// given; a stalled body is cut.
	BodyTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.MaxConnsPerClient <= 0 {
		l.MaxConnsPerClient = max(1, l.MaxConns/2)
	}
	if l.ReservedConns <= 0 {
		l.ReservedConns = DefaultReservedConns
	}
	if l.MaxBodyReads <= 0 {
		l.MaxBodyReads = DefaultMaxBodyReads
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	l.MaxBodyBytes = max(l.MaxBodyBytes, MaxBody) // one largest body always fits
	if l.BodyWait <= 0 {
		l.BodyWait = DefaultBodyWait
	}
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = DefaultBodyTimeout
	}
	return l
}

// HTTPServer is the http.Server for h with the API's timeouts: headers
// within 10 s, a whole request within a minute (bodies are also cut at
// Limits.BodyTimeout), answers within the longest blocking wait. Serve it
// on a listener from Server.Limit.
func HTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// The read deadline covers headers and body only: once a request
		// without a body is being handled, net/http clears it, so a
		// blocking query is not cut.
		ReadTimeout: time.Minute,
		// Blocking queries answer within their capped, jittered wait.
		WriteTimeout:   MaxWait + MaxWait/16 + 30*time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: MaxHeaderBytes,
		// The listener from Server.Limit closes idle connections first
		// when every slot is taken, and serves reserved ones only the
		// status routes: it learns which are idle here, and the handler
		// which are reserved from the context.
		ConnState: func(c net.Conn, st http.ConnState) {
			if lc, ok := c.(*limitConn); ok {
				lc.setState(st)
			}
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if lc, ok := c.(*limitConn); ok && lc.reserved {
				return context.WithValue(ctx, reservedKey{}, true)
			}
			return ctx
		},
	}
}

type reservedKey struct{}

// statusRoutes are what a reserved connection answers.
var statusRoutes = map[string]bool{"/v1/status": true, "/v1/status/leader": true, "/v1/status/peers": true, "/metrics": true}

// reservedOnly answers a request on a reserved connection (Limits.
// ReservedConns) only for the status routes, and closes the connection
// after the answer.
func (s *Server) reservedOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(reservedKey{}) == nil {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		if r.Method == http.MethodGet && statusRoutes[r.URL.Path] {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Retry-After", "1")
		writeErr(w, http.StatusServiceUnavailable, fmt.Sprintf("the node holds %d connections, the most it serves, none of them idle: this reserved connection answers only GET /v1/status, /v1/status/leader, /v1/status/peers and /metrics; retry later", s.limits.MaxConns))
	})
}

// Limit wraps ln so that at most Limits.MaxConns connections are open at
// once: Accept waits for one to close.
func (s *Server) Limit(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, s.limits.MaxConns), reserve: make(chan struct{}, s.limits.ReservedConns),
		done: make(chan struct{}), open: &s.conns, evicted: &s.connsEvicted,
		perClient: s.limits.MaxConnsPerClient, clients: map[string]int{}, conns: map[*limitConn]struct{}{}, refused: &s.connsRefused}
}

// ConnectionsRefused is how many connections were answered 429 because
// their client held Limits.MaxConnsPerClient already.
func (s *Server) ConnectionsRefused() int64 { return s.connsRefused.Load() }

// ConnectionsEvicted is how many idle connections were closed to make
// room for a new one when every slot was taken.
func (s *Server) ConnectionsEvicted() int64 { return s.connsEvicted.Load() }

// Connections is the number of open connections of listeners from Limit.
func (s *Server) Connections() int { return int(s.conns.Load()) }

// BodyReads is the number of request bodies being read now.
func (s *Server) BodyReads() int { return int(s.bodies.reading.Load()) }

// BodiesRefused is how many requests were answered 503 because
// Limits.MaxBodyReads or MaxBodyBytes were reached.
func (s *Server) BodiesRefused() int64 { return s.bodies.refused.Load() }

// limitListener is netutil.LimitListener with a count of open connections,
// a cap per client address, idle connections closed first when every slot
// is taken, and reserved slots beyond the cap for the status routes.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	reserve   chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	open      *atomic.Int64
	evicted   *atomic.Int64

	perClient int
	mu        sync.Mutex
	clients   map[string]int // open connections by client address
	conns     map[*limitConn]struct{}
	refused   *atomic.Int64
}

// slot takes a connection slot for a connection accepted: a free one;
// else, after closing the connection idle the longest (a client that
// connected and sent nothing, or a keep-alive between requests), the one
// it freed; else a reserved one; else it waits for one (one accepted
// connection waits so; the others stay in the kernel's accept queue).
// reserved tells which it got.
func (l *limitListener) slot() (reserved bool, err error) {
	select {
	case l.slots <- struct{}{}:
		return false, nil
	default:
	}
	if l.evictIdle() {
		select {
		case l.slots <- struct{}{}:
			return false, nil
		default:
		}
	}
	select {
	case l.slots <- struct{}{}:
		return false, nil
	case l.reserve <- struct{}{}:
		return true, nil
	case <-l.done:
		return false, net.ErrClosed
	}
}

// evictIdle closes the connection that has been idle the longest, if any.
func (l *limitListener) evictIdle() bool {
	l.mu.Lock()
	var oldest *limitConn
	var since int64
	now := time.Now().UnixNano()
	for c := range l.conns {
		if t, ok := c.evictable(now); ok && (oldest == nil || t < since) {
			oldest, since = c, t
		}
	}
	l.mu.Unlock()
	if oldest == nil {
		return false
	}
	l.evicted.Add(1)
	oldest.Close()
	return true
}

// tooMany is the answer to a connection over its client's cap.
const tooMany = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: %d\r\n\r\n%s"

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		reserved, err := l.slot()
		if err != nil {
			c.Close()
			return nil, err
		}
		free := func() {
			if reserved {
				<-l.reserve
			} else {
				<-l.slots
			}
		}
		host := c.RemoteAddr().String()
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		l.mu.Lock()
		n := l.clients[host]
		if n >= l.perClient {
			l.mu.Unlock()
			l.refused.Add(1)
			body := fmt.Sprintf(`{"error": "client %s holds %d connections to this node, the most one client may: close some (idle ones, parked blocking queries) and retry"}`+"\n", host, n)
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = fmt.Fprintf(c, tooMany, len(body), body)
			_ = c.Close()
			free()
			continue
		}
		l.clients[host] = n + 1
		lc := &limitConn{Conn: c, reserved: reserved}
		lc.setState(http.StateNew)
		l.conns[lc] = struct{}{}
		l.mu.Unlock()
		l.open.Add(1)
		lc.release = func() {
			l.mu.Lock()
			if l.clients[host]--; l.clients[host] == 0 {
				delete(l.clients, host)
			}
			delete(l.conns, lc)
			l.mu.Unlock()
			l.open.Add(-1)
			free()
		}
		return lc, nil
	}
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once      sync.Once
	release   func()
	reserved  bool
	idleSince atomic.Int64 // unix nanoseconds since it is idle; 0: serving a request
	served    atomic.Bool  // it has served a request: idle means kept alive
}

// setState records c's state: idle (connected and silent, or kept alive
// between requests) or serving a request.
func (c *limitConn) setState(st http.ConnState) {
	switch st {
	case http.StateNew, http.StateIdle:
		if st == http.StateIdle {
			c.served.Store(true)
		}
		if c.idleSince.Load() == 0 {
			c.idleSince.Store(time.Now().UnixNano())
		}
	default:
		c.idleSince.Store(0)
	}
}

// evictable tells whether c may be closed to make room, and since when it
// is idle: a kept-alive connection at once, one that connected and sent
// nothing once it has been silent for NewConnGrace (its request may be on
// the way).
func (c *limitConn) evictable(now int64) (int64, bool) {
	t := c.idleSince.Load()
	if t == 0 || c.reserved || !c.served.Load() && now-t < int64(NewConnGrace) {
		return 0, false
	}
	return t, true
}

// NewConnGrace is how long a new connection may stay silent before it may
// be closed to make room for another when every slot is taken.
const NewConnGrace = time.Second

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// bodyLimiter bounds the request bodies read at once, in number and in
// reserved bytes.
type bodyLimiter struct {
	lim     Limits
	slots   chan struct{}
	bytes   *semaphore.Weighted
	reading atomic.Int64
	peak    atomic.Int64 // highest reading seen
	refused atomic.Int64
}

func newBodyLimiter(l Limits) *bodyLimiter {
	return &bodyLimiter{lim: l, slots: make(chan struct{}, l.MaxBodyReads), bytes: semaphore.NewWeighted(l.MaxBodyBytes)}
}

// limitBodies lets a request with a body reach h only once it holds a read
// slot and its bytes; it answers 413 for a declared body above MaxBody and
// 503 with Retry-After when no slot comes within BodyWait.
func (s *Server) limitBodies(h http.Handler) http.Handler {
	bl := s.bodies
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > MaxBody {
			w.Header().Set("Connection", "close")
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes: above %d, the most the API takes", r.ContentLength, MaxBody))
			return
		}
		n := r.ContentLength
		if n < 0 { // chunked: reserve the most it may be
			n = MaxBody
		}
		ctx, cancel := context.WithTimeout(r.Context(), bl.lim.BodyWait)
		release, ok := bl.acquire(ctx, n)
		cancel()
		if !ok {
			bl.refused.Add(1)
			s.log.Debug("HTTP API busy: request body refused", "remote", r.RemoteAddr, "path", r.URL.Path, "reading", bl.reading.Load())
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(bl.lim.BodyWait/time.Second))))
			w.Header().Set("Connection", "close")
			writeErr(w, http.StatusServiceUnavailable, fmt.Sprintf("the node is reading %d request bodies already: retry later", bl.lim.MaxBodyReads))
			return
		}
		// The slot is given back once the body has been read (a
		// transaction then waits for its commit without holding one), or
		// when the handler returns.
		rb := &releasingBody{ReadCloser: r.Body, release: release}
		defer rb.done()
		r.Body = rb
		_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bl.lim.BodyTimeout))
		h.ServeHTTP(w, r)
	})
}

// releasingBody gives its read slot back at the end of the body, at the
// first read error, or at Close.
type releasingBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releasingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.done()
	}
	return n, err
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

func (b *releasingBody) done() { b.once.Do(b.release) }

// acquire takes a slot and n bytes, or gives up when ctx ends.
func (bl *bodyLimiter) acquire(ctx context.Context, n int64) (release func(), ok bool) {
	select {
	case bl.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, false
	}
	if err := bl.bytes.Acquire(ctx, n); err != nil {
		<-bl.slots
		return nil, false
	}
	cur := bl.reading.Add(1)
	for p := bl.peak.Load(); cur > p && !bl.peak.CompareAndSwap(p, cur); p = bl.peak.Load() {
	}
	return func() {
		bl.reading.Add(-1)
		bl.bytes.Release(n)
		<-bl.slots
	}, true
}
