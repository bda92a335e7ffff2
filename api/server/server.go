// Package server is the HTTP API of a node: it answers reads from the
// committed state and accepts signed transactions. Its JSON types are those
// of package api.
package server

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// MaxBody caps request bodies.
const MaxBody = types.MaxTxBytes

// Backend is what the server needs from a node.
type Backend interface {
	// Status describes the node and its latest committed state.
	Status(ctx context.Context) (api.Status, error)
	// Read returns a reader of the latest committed state.
	Read() (*app.Query, error)
	// ReadAt returns a reader of a committed version of the state (0: the
	// latest) that proves what it reads, for the proven reads (?proof=1).
	ReadAt(version int64) (ProvingReader, error)
	// BroadcastTx submits tx and waits until it is committed or refused.
	BroadcastTx(ctx context.Context, tx []byte) (api.TxResult, error)
	// Tx looks up a committed transaction by its hash (upper-case hex); an
	// error matching api.ErrNotFound if no committed block holds it.
	Tx(ctx context.Context, hash string) (api.TxResult, error)
	// AppHash is the application hash after the block at height; an error
	// matching api.ErrNotFound if that version is not kept.
	AppHash(height int64) ([]byte, error)
	// Observe queues a passive check result for this node's observer. It
	// fails with an error matching api.ErrNotFound for an unknown check and
	// api.ErrBadRequest for one that takes no submitted results here.
	Observe(ctx context.Context, r api.PassiveResult) (api.ObserveAck, error)
}

// Config holds the server's settings.
type Config struct {
	// ObserveToken is the bearer token POST /v1/observe requires (the
	// node's config/observe_token). Empty, every passive result is
	// refused.
	ObserveToken string
	// Tokens map the tokens of Consul-style writes (/v1/kv, /v1/txn,
	// /v1/session) to operator keys this node holds: never logged, never in
	// replicated state. Empty, such writes answer 403.
	Tokens []Token
	// Limits bound connections and the request bodies read at once
	// (zero fields: defaults).
	Limits Limits
}

// Server is the HTTP API of a node. Commits reach it through Committed,
// which wakes the blocking queries waiting on what changed.
type Server struct {
	b   Backend
	cfg Config
	log *slog.Logger
	hub *hub
	h   http.Handler

	parked atomic.Int64 // blocking queries waiting for a change
	cache  answerCache  // plain answers of the latest version
	proofs answerCache  // proven answers of the newest provable version

	provableRoutes []string // ProvableRoutes

	limits Limits       // cfg.Limits with defaults
	bodies *bodyLimiter // request bodies being read
	conns  atomic.Int64 // open connections of Limit's listeners

	connsRefused atomic.Int64 // connections over a client's cap
	connsEvicted atomic.Int64 // idle connections closed to make room

	kvState
}

// Parked is the number of blocking queries waiting for a change now.
func (s *Server) Parked() int { return int(s.parked.Load()) }

// New returns the API server.
func New(b Backend, cfg Config, logger *slog.Logger) *Server {
	s := &Server{b: b, cfg: cfg, log: logger, hub: newHub(), limits: cfg.Limits.withDefaults()}
	s.bodies = newBodyLimiter(s.limits)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/v1/status", http.StatusFound)
	})
	mux.HandleFunc("GET /v1/status", unprovable(s.status))
	s.provableRoute(mux, "GET /v1/services", s.services)
	s.provableRoute(mux, "GET /v1/services/{name}", s.service)
	s.provableRoute(mux, "GET /v1/checks/{service}/{instance}/{check}", s.check)
	s.provableRoute(mux, "GET /v1/alerts", s.alerts)
	s.provableRoute(mux, "GET /v1/observers", s.observers)
	s.provableRoute(mux, "GET /v1/receivers", s.receivers)
	mux.HandleFunc("GET /v1/apphash/{height}", unprovable(s.appHash))
	mux.HandleFunc("POST /v1/txs", unprovable(s.txs))
	mux.HandleFunc("GET /v1/txs/{hash}", unprovable(s.tx))
	mux.HandleFunc("POST /v1/observe", unprovable(s.observe))
	s.provableRoute(mux, "GET /v1/sd/prometheus", s.promSD)
	mux.HandleFunc("GET /v1/locks/{key...}", unprovable(s.lock))
	s.consulRoutes(mux)
	s.kvRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The catch-all hides the mux's own 405s: look for the path under
		// another method.
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut} {
			other := r.Clone(r.Context())
			other.Method = m
			if _, pattern := mux.Handler(other); m != r.Method && pattern != "/" {
				w.Header().Set("Allow", m)
				writeErr(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, r.URL.Path, m))
				return
			}
		}
		writeErr(w, http.StatusNotFound, fmt.Sprintf("no route %s %s (see /v1/status, /v1/services, /v1/alerts, /v1/observers, /v1/receivers)", r.Method, r.URL.Path))
	})
	s.h = s.logged(s.reservedOnly(s.limitBodies(mux)))
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.h.ServeHTTP(w, r) }

// Committed tells the server what a committed block changed; the blocking
// queries waiting on it answer. It must be called after the block's state
// is readable through the Backend.
func (s *Server) Committed(c app.Changes) { s.hub.committed(c) }

// answer reads one version of the state: the answer's index and body. An
// error matching app.ErrNotFound or api.ErrNotFound answers 404, one
// matching api.ErrBadRequest 400, a *textError its own status and text;
// those are answers of the version like any other (cached, and proven by
// the proven form). Any other error answers 500.
type answer func(q *app.Query) (index int64, body any, err error)

// textError is an answer a route gives as plain text with its own status,
// as Consul gives its errors.
type textError struct {
	code int
	msg  string
}

func (e *textError) Error() string { return e.msg }

// read answers a GET from the latest committed state, blocking while b
// asks to and the answer's index is not above b.index. Waiting costs a
// parked goroutine: it wakes only when a commit changes topic, reads
// again, and answers if the index moved. mark sets the response headers
// for the index.
//
// With b.proof it answers the proven form (api.Proven) of the same read
// at the newest provable version (the latest minus one), and a blocking
// one wakes at every commit: a change committed at height H is provable
// only once H+1 is.
func (s *Server) read(w http.ResponseWriter, r *http.Request, topic string, b blocking, read answer, mark func(http.Header, int64)) {
	if b.minHeight > 0 {
		if err := s.reach(r.Context(), b); err != nil {
			s.fail(w, err)
			return
		}
	}
	var timeout <-chan time.Time
	if b.on {
		t := time.NewTimer(b.wait)
		defer t.Stop()
		timeout = t.C
	}
	cacheable, watched := topic != topicBlock, topic
	if b.proof {
		watched = topicBlock
	}
	for {
		changed, release := s.hub.watch(watched) // before reading: no change slips between
		var ans cachedAnswer
		var err error
		if b.proof {
			ans, err = s.proven(r, read)
		} else {
			var q *app.Query
			if q, err = s.b.Read(); err == nil {
				ans, err = s.answer(q, r, cacheable, read)
			}
		}
		if err != nil {
			release()
			s.fail(w, err)
			return
		}
		if !b.on || ans.final || ans.index > b.index {
			release()
			respond(w, ans, mark)
			return
		}
		s.parked.Add(1)
		select {
		case <-changed:
			s.parked.Add(-1)
			release()
		case <-timeout:
			s.parked.Add(-1)
			release()
			respond(w, ans, mark)
			return
		case <-r.Context().Done():
			s.parked.Add(-1)
			release()
			return
		}
	}
}

// MinHeightWait is how long a read with ?min_height= waits, at most, for
// this node to reach that height (less if its ?wait= is shorter).
const MinHeightWait = 10 * time.Second

// reach waits until this node answers b's kind of read (plain: the latest
// height; proven: the newest provable, one below) from b.minHeight or
// above, and says how far behind it is if it does not get there in time.
func (s *Server) reach(ctx context.Context, b blocking) error {
	t := time.NewTimer(min(b.wait, MinHeightWait))
	defer t.Stop()
	for {
		changed, release := s.hub.watch(topicBlock)
		q, err := s.b.Read()
		if err != nil {
			release()
			return err
		}
		h := q.Info().Height
		if b.proof {
			h--
		}
		if h >= b.minHeight {
			release()
			return nil
		}
		select {
		case <-changed:
			release()
		case <-t.C:
			release()
			return fmt.Errorf("this node answers from height %d, below %s=%d: it is behind (catching up, or cut off); ask again or ask another node: %w",
				h, api.MinHeightParam, b.minHeight, api.ErrNotReady)
		case <-ctx.Done():
			release()
			return ctx.Err()
		}
	}
}

// respond writes an answer with its headers: its index's (for a 200) and
// its height's.
func respond(w http.ResponseWriter, ans cachedAnswer, mark func(http.Header, int64)) {
	if ans.index > 0 {
		mark(w.Header(), ans.index)
	}
	heightHeaders(w.Header(), ans.height, ans.blockTime)
	if ans.text {
		consulText(w, ans.code, string(ans.body))
		return
	}
	writeBody(w, ans.code, ans.body)
}

// Headers of every read: the committed height it was read at, that block's
// time, and how long ago that was, so that a client can tell an old answer
// (from a node that stopped committing) from a current one.
const (
	HeaderHeight    = "X-Bftmon-Height"
	HeaderBlockTime = "X-Bftmon-Block-Time"
	HeaderAge       = "X-Bftmon-Age"
)

func heightHeaders(h http.Header, height, blockTimeMs int64) {
	bt := time.UnixMilli(blockTimeMs)
	h.Set(HeaderHeight, strconv.FormatInt(height, 10))
	h.Set(HeaderBlockTime, bt.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderAge, strconv.FormatFloat(max(0, time.Since(bt).Seconds()), 'f', 1, 64))
}

// bftmonIndex sets X-Bftmon-Index.
func bftmonIndex(h http.Header, index int64) { h.Set(api.IndexHeader, strconv.FormatInt(index, 10)) }

func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		s.log.Debug("http", "method", r.Method, "path", r.URL.Path, "took", time.Since(start))
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := encode(v)
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error": "encode the answer"}`+"\n")
	}
	writeBody(w, code, body)
}

// encode is the JSON of an answer as the API writes it.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	return b.Bytes(), err
}

// writeBody writes an encoded JSON answer.
func writeBody(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// answer reads and encodes the answer to r from q, or takes it from the
// cache: every read of one committed version gives the same answer, so
// per block only the first request of each route and query pays for
// reading and encoding it. Status (topicBlock) is read apart from q and is
// not cacheable.
func (s *Server) answer(q *app.Query, r *http.Request, cacheable bool, read answer) (cachedAnswer, error) {
	height, key := q.Info().Height, r.URL.Path+"?"+r.URL.RawQuery
	if cacheable {
		if a, ok := s.cache.get(height, key); ok {
			return a, nil
		}
	}
	a, err := compute(q, read)
	if err != nil {
		return cachedAnswer{}, err
	}
	if cacheable {
		s.cache.put(height, key, a)
	}
	return a, nil
}

// compute runs a route's read on q and encodes what it answers: the one
// path of the plain and the proven forms.
func compute(q *app.Query, read answer) (cachedAnswer, error) {
	info := q.Info()
	a := cachedAnswer{height: info.Height, blockTime: info.BlockTime, code: http.StatusOK}
	index, body, err := read(q)
	var te *textError
	var missing *kvMissing
	var raw *rawValue
	switch {
	case errors.As(err, &missing):
		a.code, a.index, a.text = http.StatusNotFound, missing.index, true
		return a, nil
	case errors.As(err, &raw):
		a.index, a.body, a.text = max(raw.index, 1), raw.value, true
		return a, nil
	case errors.As(err, &te):
		a.code, a.body, a.text, a.final = te.code, []byte(te.msg), true, true
		return a, nil
	case errors.Is(err, app.ErrNotFound), errors.Is(err, api.ErrNotFound):
		a.code, a.final = http.StatusNotFound, true
		body = api.Error{Error: err.Error()}
	case errors.Is(err, api.ErrBadRequest):
		a.code, a.final = http.StatusBadRequest, true
		body = api.Error{Error: err.Error()}
	case err != nil:
		return cachedAnswer{}, err
	default:
		a.index = max(index, 1) // 0 would tell clients not to block
	}
	if a.body, err = encode(body); err != nil {
		return cachedAnswer{}, fmt.Errorf("encode the answer: %w", err)
	}
	return a, nil
}

// maxCached bounds the answers cached for one version.
const maxCached = 4096

// cachedAnswer is an encoded answer: its status, its index (0 unless a
// 200), its body, and the height and block time it was read at.
type cachedAnswer struct {
	code  int
	index int64
	body  []byte
	text  bool // body is plain text, not JSON
	// final is set on an answer that a blocking query gives at once (an
	// error such as 404, or a proven answer of one).
	final     bool
	height    int64
	blockTime int64 // ms
}

// answerCache holds the encoded answers of the latest committed version
// read, by request path and query.
type answerCache struct {
	mu      sync.Mutex
	height  int64
	answers map[string]cachedAnswer
}

func (c *answerCache) get(height int64, key string) (cachedAnswer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if height != c.height {
		return cachedAnswer{}, false
	}
	a, ok := c.answers[key]
	return a, ok
}

// put keeps a for height; a newer height drops the older answers.
func (c *answerCache) put(height int64, key string, a cachedAnswer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case height > c.height || c.answers == nil:
		c.height, c.answers = height, map[string]cachedAnswer{}
	case height < c.height || len(c.answers) >= maxCached:
		return
	}
	c.answers[key] = a
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Error: msg})
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, app.ErrNotFound), errors.Is(err, api.ErrNotFound):
		writeErr(w, http.StatusNotFound, err.Error())
		return
	case errors.Is(err, api.ErrBadRequest):
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	case errors.Is(err, api.ErrNotReady):
		w.Header().Set("Retry-After", "1")
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s.log.Error("API read failed", "err", err)
	writeErr(w, http.StatusInternalServerError, err.Error())
}

func (s *Server) appHash(w http.ResponseWriter, r *http.Request) {
	h, err := strconv.ParseInt(r.PathValue("height"), 10, 64)
	if err != nil || h < 1 {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("height %q: want a positive block height", r.PathValue("height")))
		return
	}
	hash, err := s.b.AppHash(h)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.AppHash{Height: h, AppHash: fmt.Sprintf("%X", hash)})
}

func observerIndex(list []types.Observer) map[string]string {
	m := make(map[string]string, len(list))
	for _, o := range list {
		m[o.Id] = o.Name
	}
	return m
}

func (s *Server) txs(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, MaxBody)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("transaction above %d bytes", MaxBody))
		return
	case err != nil:
		writeErr(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	case len(body) == 0:
		writeErr(w, http.StatusBadRequest, "empty body: POST the signed transaction's bytes")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res, err := s.b.BroadcastTx(ctx, body)
	if err != nil {
		if errors.Is(err, api.ErrNotReady) {
			// Nothing was taken: the client may send the same bytes again.
			w.Header().Set("Retry-After", "1")
		}
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// tx answers where a transaction was committed, by its hash: what a client
// asks when the node it gave the transaction to went away before answering.
func (s *Server) tx(w http.ResponseWriter, r *http.Request) {
	hash := strings.ToUpper(r.PathValue("hash"))
	if len(hash) != 64 || strings.Trim(hash, "0123456789ABCDEF") != "" {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("tx hash %q: want the 64 hex digits of the transaction's SHA-256", r.PathValue("hash")))
		return
	}
	res, err := s.b.Tx(r.Context(), hash)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// readBody reads r's body, at most limit bytes, into a buffer sized from
// its Content-Length: what limitBodies reserved for it is what it takes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	size := limit
	if r.ContentLength >= 0 && r.ContentLength < limit {
		size = r.ContentLength
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+bytes.MinRead))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	return buf.Bytes(), err
}

// observe takes a passive result from a client on this machine: the node's
// observer signs whatever it is given, so only loopback clients that hold
// the node's observe token may give, and never a browser (a web page on
// this machine, DNS rebinding, a local proxy): see refuseObserve.
func (s *Server) observe(w http.ResponseWriter, r *http.Request) {
	if code, msg := s.refuseObserve(r); code != 0 {
		s.log.Warn("refused a passive result", "remote", r.RemoteAddr, "code", code, "reason", msg)
		if code == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="bftmon observe"`)
		}
		writeErr(w, code, msg)
		return
	}
	var pr api.PassiveResult
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pr); err != nil {
		writeErr(w, http.StatusBadRequest, "body: want JSON {service, instance, check, code, output}: "+err.Error())
		return
	}
	if pr.Service == "" || pr.Instance == "" || pr.Check == "" {
		writeErr(w, http.StatusBadRequest, "body: service, instance and check are required")
		return
	}
	if pr.Code < 0 || pr.Code > 3 {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("body: code %d: want a Nagios code 0 (ok), 1 (warning), 2 (critical) or 3 (unknown)", pr.Code))
		return
	}
	ack, err := s.b.Observe(r.Context(), pr)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, ack)
}

// observeHelp says how to submit results the way the server takes them.
const observeHelp = "run 'bftmon submit' on the observer's host; it reads the token from $BFTMON_HOME/config/observe_token, or pass --token-file"

// refuseObserve says why r may not submit a passive result (an HTTP code
// and a message), or 0. The order matters only for the message: a request
// from another machine or from a browser is refused whatever it holds.
func (s *Server) refuseObserve(r *http.Request) (int, string) {
	if !fromLoopback(r) {
		return http.StatusForbidden, "POST /v1/observe is served to clients on this machine only: run 'bftmon submit' on the observer's host"
	}
	// Current browsers send Origin with every POST and Sec-Fetch-Site
	// ("none" only for a request the user typed in) with every request;
	// a page cannot set or leave out either. bftmon submit, curl and
	// Nagios send neither.
	if r.Header.Get("Origin") != "" {
		return http.StatusForbidden, "POST /v1/observe: browsers may not submit results (the request has an Origin header): " + observeHelp
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "none" {
		return http.StatusForbidden, "POST /v1/observe: browsers may not submit results (the request has Sec-Fetch-Site: " + site + "): " + observeHelp
	}
	if !s.observeTokenOK(r.Header.Get("Authorization")) {
		return http.StatusUnauthorized, "POST /v1/observe: missing or wrong observe token (header Authorization: Bearer TOKEN): " + observeHelp
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q: POST /v1/observe takes application/json", r.Header.Get("Content-Type"))
	}
	return 0, ""
}

// observeTokenOK says whether the Authorization header carries the
// observe token, comparing in constant time. A server without a token
// takes none.
func (s *Server) observeTokenOK(authorization string) bool {
	scheme, tok, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || s.cfg.ObserveToken == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.ObserveToken)) == 1
}

// fromLoopback says whether the request came from this machine.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Instance converts an instance view into its JSON form.
func Instance(iv *app.InstanceView) api.Instance {
	si := &iv.Instance
	out := api.Instance{
		Service: si.Name, ID: si.Id, Address: si.Address, Port: int(si.Port), Datacenter: si.Datacenter,
		Tags: si.Tags, Meta: map[string]string{}, Status: iv.Status.Name(), Verdict: iv.Verdict().Name(), RegisteredHeight: si.RegisteredHeight,
	}
	if out.Tags == nil {
		out.Tags = []string{}
	}
	for _, p := range si.Meta {
		out.Meta[p.Key] = p.Value
	}
	for _, cv := range iv.Checks {
		c := &cv.Check
		ac := api.Check{
			ID: c.Id, Kind: c.Kind, Interval: msDur(c.IntervalMs), Timeout: msDur(c.TimeoutMs), TTL: msDur(c.TtlMs),
			Confirm: msDur(c.ConfirmMs), Status: cv.State.Verdict.Name(), StatusHeight: cv.State.VerdictHeight,
			HardStatus: cv.State.Hard.Name(), HardHeight: cv.State.HardHeight,
		}
		ac.Target = target(c)
		for _, rep := range cv.Reports {
			v := api.ObserverView{Observer: rep.Observer.Id, Name: rep.Observer.Name, Datacenter: rep.Observer.Datacenter, Status: "pending", Fresh: rep.Fresh}
			if rec := rep.Record; rec != nil {
				v.Status, v.Output, v.Height = rec.Status.Name(), rec.Output, rec.Height
				v.LatencyMs = float64(rec.LatencyUs) / 1000
				asOf := time.UnixMilli(rep.AsOfMs).UTC()
				v.AsOf = &asOf
			}
			ac.Observers = append(ac.Observers, v)
		}
		out.Checks = append(out.Checks, ac)
	}
	return out
}

// target says in a few words what a check looks at.
func target(c *types.Check) string {
	switch {
	case c.Http != nil:
		return c.Http.Url
	case c.Tcp != nil:
		return c.Tcp.Address
	case c.Dns != nil:
		return fmt.Sprintf("%s %s @%s", c.Dns.Name, cmp.Or(c.Dns.Type, "A"), c.Dns.Server)
	case c.Grpc != nil:
		if c.Grpc.Service != "" {
			return c.Grpc.Address + " " + c.Grpc.Service
		}
		return c.Grpc.Address
	case c.Exec != nil:
		return strings.Join(c.Exec.Argv, " ")
	case c.Kind == "passive":
		return "submitted results"
	}
	return ""
}

func msDur(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() }
