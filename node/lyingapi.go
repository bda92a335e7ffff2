package node

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/proof"
)

// The lies of a --byzantine=lying-api node's HTTP API, as counted in
// bftmon_byzantine_api_lies_total{lie} and named in HeaderTestLie.
const (
	// LieForgeVerdict flips a status in the answer: every status of the
	// first instance, service, check or target group that has one
	// (passing → critical; critical, warning, unknown, pending, disputed,
	// stale → passing), an alert's from and to (swapped), an observer's
	// suspect flag.
	LieForgeVerdict = "forge-verdict"
	// LieHideInstance drops the first element of a list answer: an
	// instance (native, Consul, http_sd), or a service, alert, observer,
	// receiver or check of the other list routes.
	LieHideInstance = "hide-instance"
	// LieInventAlert adds a plausible alert at the head of /v1/alerts: the
	// newest alert's check with its transition reversed at the current
	// height, under a new id (or a made-up alert when there is none).
	LieInventAlert = "invent-alert"
	// LieStaleHeight replays the answer this node gave to the same request
	// at a lower height: the newest it kept that is at least StaleLieAge
	// old, or else the oldest it kept, with that answer's headers (height,
	// index, block time and age). A proven answer is replayed whole: its
	// proofs hold, at its old height.
	LieStaleHeight = "stale-height"
	// LieOtherProofs, in a proven answer only, replaces height and proofs
	// with those of the newest proven answer given to another request
	// (another route's first): they verify against their height's app
	// hash but prove other records than the answer's. Proofs that would
	// rebuild the answer all the same (Consul's health and checks routes
	// read the same records; a list proves a name's absence) are passed
	// over: the liar verifies them first, as a client would.
	LieOtherProofs = "other-proofs"
)

// LieCycle is the deterministic sequence of a lying route: the k-th GET
// (from 0) of one route (its pattern, e.g. "GET /v1/services/{name}") in
// one form (plain, or proven with ?proof=1) gets LieCycle[k %
// len(LieCycle)]; "" is an honest answer. A lie that does not apply to
// that answer (invent-alert on another route than /v1/alerts,
// other-proofs on a plain answer or with no kept proofs that fail to
// prove it, a forged verdict where no status is
// shown, hiding in an empty list or an error answer, a stale height with
// no answer kept at a lower height) leaves the answer honest, without
// HeaderTestLie and uncounted; the next request still takes the next
// slot.
var LieCycle = []string{"", LieForgeVerdict, LieHideInstance, LieInventAlert, LieStaleHeight, LieOtherProofs}

// Lies lists the lies, in the order of LieCycle.
var Lies = []string{LieForgeVerdict, LieHideInstance, LieInventAlert, LieStaleHeight, LieOtherProofs}

// LyingRoutes are the routes a lying-api node lies on: every read of the
// agreed state that has a proven form (server.ProvableRoutes: native, the
// Consul subset, key/value entries, sessions, http_sd), so a route added
// there is lied on here without a second list to forget. /v1/status,
// /v1/apphash, /v1/txs, /v1/locks, the Consul agent's own facts and
// /metrics stay honest.
var LyingRoutes = server.ProvableRoutes()

// HeaderTestLie names the lie an answer of a lying-api node carries. It
// exists only in this test mode, so that tests can count that each lie was
// exercised: a real liar would not say so, and no test may use it to
// decide whether an answer is true (that is verification's job).
const HeaderTestLie = "X-Bftmon-Test-Lie"

// StaleLieAge is how old an answer the stale-height lie prefers to replay.
const StaleLieAge = 60 * time.Second

// What a lying API keeps of its honest answers, for stale-height and
// other-proofs.
const (
	lieKeepPerRequest = 6               // old answers per request
	lieKeepSpacing    = StaleLieAge / 4 // between two old answers kept
	lieKeepRequests   = 256
	lieKeepBytes      = 64 << 20
)

// lyingAPI is the HTTP middleware of a --byzantine=lying-api node: it
// serves the honest API's answer to every request, rewritten on the
// lying routes per LieCycle. It works on the answers' JSON, plain or
// proven ({"height","code","index","answer","proofs"}), and keeps them
// well-formed: only verification can tell.
type lyingAPI struct {
	next   http.Handler
	routes *http.ServeMux // LyingRoutes, to match a request's pattern
	log    *slog.Logger
	lies   *prometheus.CounterVec
	now    func() time.Time
	// appHash is the app hash the node committed at a height, for
	// otherProofs to check its lie (nil: unchecked).
	appHash func(height int64) ([]byte, error)

	mu      sync.Mutex
	counts  map[string]int   // route pattern and form → requests so far
	history map[string]*kept // by request (requestKey)
	bytes   int              // of the bodies in history
	seq     int64            // of the last record
}

// kept are the honest answers kept for one request.
type kept struct {
	// latest is the answer at the highest height (for other-proofs).
	latest lieRecord
	// old are answers at rising heights, oldest first, at least
	// lieKeepSpacing apart (for stale-height).
	old []lieRecord
}

// lieRecord is an honest answer kept.
type lieRecord struct {
	seq    int64
	at     time.Time
	route  string
	height int64
	proven bool
	header http.Header
	body   []byte
}

// newLyingAPI wraps next, counting its lies in reg.
func newLyingAPI(next http.Handler, reg prometheus.Registerer, logger *slog.Logger) *lyingAPI {
	l := &lyingAPI{
		next: next, routes: http.NewServeMux(), log: logger.With("byzantine", ByzLyingAPI), now: time.Now,
		lies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bftmon_byzantine_api_lies_total",
			Help: "Answers a lying-api test node's HTTP API lied in, by lie.",
		}, []string{"lie"}),
		counts: map[string]int{}, history: map[string]*kept{},
	}
	for _, lie := range Lies {
		l.lies.WithLabelValues(lie)
	}
	reg.MustRegister(l.lies)
	for _, p := range LyingRoutes {
		l.routes.Handle(p, http.NotFoundHandler())
	}
	l.log.Warn("this node's HTTP API lies on purpose (test mode): forged verdicts, hidden instances, invented alerts, stale heights, proofs of other records")
	return l
}

// route is r's lying route pattern, or "".
func (l *lyingAPI) route(r *http.Request) string {
	if r.Method != http.MethodGet {
		return ""
	}
	_, pattern := l.routes.Handler(r)
	if !slices.Contains(LyingRoutes, pattern) {
		return ""
	}
	return pattern
}

// wantsProof says whether r asks for the proven form (?proof, ?proof=1,
// ?proof=true), as the API reads it.
func wantsProof(r *http.Request) bool {
	v, ok := r.URL.Query()[api.ProofParam]
	return ok && (v[0] == "" || v[0] == "1" || v[0] == "true")
}

// requestKey identifies a request for the answers kept: its path and
// query without the blocking parameters.
func requestKey(r *http.Request) string {
	q := r.URL.Query()
	q.Del("index")
	q.Del("wait")
	q.Del(api.MinHeightParam) // the same answer, whatever a client's floor
	return r.URL.Path + "?" + q.Encode()
}

// ServeHTTP serves the honest answer, or a lie.
func (l *lyingAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := l.route(r)
	if route == "" {
		l.next.ServeHTTP(w, r)
		return
	}
	form := "plain"
	if wantsProof(r) {
		form = "proven"
	}
	l.mu.Lock()
	k := l.counts[route+" "+form]
	l.counts[route+" "+form] = k + 1
	l.mu.Unlock()
	lie := LieCycle[k%len(LieCycle)]

	buf := &bufferedResponse{w: w, header: http.Header{}}
	l.next.ServeHTTP(buf, r)
	if buf.code == 0 {
		buf.code = http.StatusOK
	}
	honest := lieAnswer{code: buf.code, header: buf.header, body: buf.body.Bytes()}
	out, ok := honest, false
	if lie != "" {
		var err error
		out, ok, err = l.tell(r.Context(), lie, route, requestKey(r), r.URL.RequestURI(), honest)
		if err != nil {
			l.log.Debug("lie not told", "lie", lie, "path", r.URL.Path, "err", err)
			out, ok = honest, false
		}
	}
	l.record(route, requestKey(r), honest)

	for name, v := range out.header {
		w.Header()[name] = v
	}
	w.Header().Del("Content-Length")
	if ok {
		w.Header().Set(HeaderTestLie, lie)
		l.lies.WithLabelValues(lie).Inc()
		l.log.Debug("lied", "lie", lie, "route", route, "form", form, "path", r.URL.Path)
	}
	w.WriteHeader(out.code)
	_, _ = w.Write(out.body)
}

// lieAnswer is an HTTP answer.
type lieAnswer struct {
	code   int
	header http.Header
	body   []byte
}

// parsed is an answer's JSON and where its lies go.
type parsed struct {
	tree   any    // the whole body
	proven *jobj  // the proven form's object, or nil
	target any    // what a forge or hide changes: the answer
	height int64  // the height it was read at (0: unknown)
	orig   []byte // the body
}

// parse reads an honest 200 answer; ok is false for any other.
func parse(a lieAnswer) (p parsed, ok bool) {
	if a.code != http.StatusOK || !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
		return p, false
	}
	tree, err := parseJSON(a.body)
	if err != nil {
		return p, false
	}
	p = parsed{tree: tree, target: tree, orig: a.body}
	p.height, _ = strconv.ParseInt(a.header.Get(server.HeaderHeight), 10, 64)
	if o, isObj := tree.(*jobj); isObj && o.has("answer") && o.has("proofs") && o.has("height") {
		p.proven, p.target = o, o.get("answer")
		if n, isNum := o.get("height").(json.Number); isNum {
			p.height, _ = n.Int64()
		}
		if n, isNum := o.get("code").(json.Number); isNum && n.String() != "200" {
			p.target = nil // an error answer (404 and the like): nothing to forge or hide
		}
	}
	return p, true
}

// replace makes v the answer: the proven form's, or the whole body.
func (p *parsed) replace(v any) {
	if p.proven != nil {
		p.proven.set("answer", v)
	} else {
		p.tree = v
	}
	p.target = v
}

// tell rewrites honest per lie; ok is false when the lie does not apply.
func (l *lyingAPI) tell(ctx context.Context, lie, route, key, pathAndQuery string, honest lieAnswer) (out lieAnswer, ok bool, err error) {
	p, ok := parse(honest)
	if !ok {
		return honest, false, nil
	}
	switch lie {
	case LieForgeVerdict:
		ok = forgeVerdict(p.target, p.height)
	case LieHideInstance:
		ok = hideFirst(&p)
	case LieInventAlert:
		ok = route == "GET /v1/alerts" && inventAlert(&p, honest.header)
	case LieStaleHeight:
		rec, found := l.stale(key, p.height, p.proven != nil)
		if !found {
			return honest, false, nil
		}
		return lieAnswer{code: http.StatusOK, header: rec.header.Clone(), body: rec.body}, true, nil
	case LieOtherProofs:
		if p.proven == nil {
			return honest, false, nil
		}
		ok, err = l.otherProofs(ctx, route, key, pathAndQuery, p.proven)
	}
	if err != nil || !ok {
		return honest, false, err
	}
	body, err := encodeLike(p.orig, p.tree)
	if err != nil {
		return honest, false, fmt.Errorf("encode the lie: %w", err)
	}
	return lieAnswer{code: honest.code, header: honest.header, body: body}, true, nil
}

// record keeps an honest 200 answer read at a known height above the
// last one kept for key.
func (l *lyingAPI) record(route, key string, a lieAnswer) {
	p, ok := parse(a)
	if !ok || p.height <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	kp := l.history[key]
	if kp == nil {
		if len(l.history) >= lieKeepRequests {
			return
		}
		kp = &kept{}
		l.history[key] = kp
	}
	if kp.latest.height >= p.height || l.bytes+len(a.body) > lieKeepBytes {
		return
	}
	now := l.now()
	h := a.header.Clone()
	h.Del("Content-Length")
	h.Del("Date")
	l.seq++
	rec := lieRecord{seq: l.seq, at: now, route: route, height: p.height, proven: p.proven != nil, header: h, body: bytes.Clone(a.body)}
	l.bytes += len(rec.body) - len(kp.latest.body)
	kp.latest = rec
	if n := len(kp.old); n > 0 && now.Sub(kp.old[n-1].at) < lieKeepSpacing {
		return
	}
	if len(kp.old) == lieKeepPerRequest {
		// Keep the oldest until a newer one is old enough for the stale
		// lie: drop the first if the second will do, else the second.
		drop := 1
		if now.Sub(kp.old[1].at) >= StaleLieAge {
			drop = 0
		}
		l.bytes -= len(kp.old[drop].body)
		kp.old = slices.Delete(kp.old, drop, drop+1)
	}
	kp.old = append(kp.old, rec)
	l.bytes += len(rec.body)
}

// stale is the answer to replay for key instead of one at height: the
// newest kept at least StaleLieAge old, or the oldest kept, if lower.
func (l *lyingAPI) stale(key string, height int64, proven bool) (lieRecord, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kp := l.history[key]
	if kp == nil || len(kp.old) == 0 {
		return lieRecord{}, false
	}
	pick := kp.old[0]
	now := l.now()
	for _, rec := range kp.old {
		if now.Sub(rec.at) >= StaleLieAge {
			pick = rec
		}
	}
	if pick.height >= height || pick.proven != proven {
		return lieRecord{}, false
	}
	return pick, true
}

// otherProofs puts into a proven answer the height and proofs of the
// newest proven answer kept for another request (another route's first)
// whose proofs differ from its own and, when l can check, do not prove
// the answer: verified against their height's app hash, the records they
// prove must not rebuild it (another service's list can prove a service's
// absence, say, and the Consul health and checks routes read the same
// records). ok is false when no such answer is kept.
func (l *lyingAPI) otherProofs(ctx context.Context, route, key, pathAndQuery string, proven *jobj) (ok bool, err error) {
	own, err := json.Marshal(proven.get("proofs"))
	if err != nil {
		return false, fmt.Errorf("encode the proofs: %w", err)
	}
	l.mu.Lock()
	var cands []lieRecord
	for k, kp := range l.history {
		if k != key && kp.latest.proven {
			cands = append(cands, kp.latest)
		}
	}
	l.mu.Unlock()
	slices.SortFunc(cands, func(a, b lieRecord) int {
		if (a.route == route) != (b.route == route) {
			if a.route == route {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.seq, a.seq)
	})
	for i, rec := range cands {
		if i == maxOtherProofsTries {
			break
		}
		tree, err := parseJSON(rec.body)
		if err != nil {
			continue
		}
		other, ok := tree.(*jobj)
		if !ok {
			continue
		}
		theirs, err := json.Marshal(other.get("proofs"))
		if err != nil || bytes.Equal(own, theirs) || l.proves(ctx, other, theirs, pathAndQuery, proven) {
			continue
		}
		proven.set("height", other.get("height"))
		proven.set("proofs", other.get("proofs"))
		return true, nil
	}
	return false, nil
}

// maxOtherProofsTries bounds the proven answers otherProofs checks.
const maxOtherProofsTries = 16

// proves says whether the proofs (JSON bundle) of the proven answer other
// prove the answer of proven to pathAndQuery, as a verifying client
// would find: false when l cannot check (no app hashes).
func (l *lyingAPI) proves(ctx context.Context, other *jobj, bundle []byte, pathAndQuery string, proven *jobj) bool {
	if l.appHash == nil {
		return false
	}
	n, ok := other.get("height").(json.Number)
	if !ok {
		return false
	}
	height, err := n.Int64()
	if err != nil {
		return false
	}
	var b proof.Bundle
	if err := json.Unmarshal(bundle, &b); err != nil {
		return false
	}
	hash, err := l.appHash(height)
	if err != nil {
		return false
	}
	r, err := proof.Verify(&b, hash)
	if err != nil {
		return false
	}
	code, rebuilt, err := server.Rebuild(ctx, r, http.MethodGet, pathAndQuery)
	if err != nil {
		return false
	}
	told, err := json.Marshal(proven.get("answer"))
	if err != nil {
		return false
	}
	c, _ := proven.get("code").(json.Number)
	return c.String() == strconv.Itoa(code) && bytes.Equal(told, rebuilt)
}

// statusKeys are the fields that carry a verdict or status, in the native
// API, the Consul subset and http_sd labels.
var statusKeys = map[string]bool{
	"status": true, "verdict": true, "hard_status": true, "Status": true,
	"bftmon_status": true, "bftmon_verdict": true, "__meta_bftmon_status": true, "__meta_bftmon_verdict": true,
}

// keepKeys hold the observers' own reports, which a forged verdict leaves
// as they are.
var keepKeys = map[string]bool{"observers": true, "views": true, "deliveries": true}

// flipStatus is the forged status for s.
func flipStatus(s string) string {
	if s == "passing" {
		return "critical"
	}
	return "passing"
}

// forgeVerdict forges the verdict of the first element of a list answer
// that shows one (or of an object answer): see LieForgeVerdict.
func forgeVerdict(target any, height int64) bool {
	switch t := target.(type) {
	case []any:
		for _, e := range t {
			if forgeOne(e, height) {
				return true
			}
		}
	case *jobj:
		return forgeOne(t, height)
	}
	return false
}

// forgeOne forges one element's verdict: every status field to the flip
// of its first, an alert's transition reversed, an observer's suspect
// flag negated.
func forgeOne(e any, height int64) bool {
	o, ok := e.(*jobj)
	if !ok {
		return false
	}
	from, okFrom := o.get("from").(string)
	to, okTo := o.get("to").(string)
	if okFrom && okTo && o.has("views") {
		if from == to {
			o.set("to", flipStatus(to))
		} else {
			o.set("from", to)
			o.set("to", from)
		}
		return true
	}
	if s, ok := o.get("suspect").(bool); ok {
		o.set("suspect", !s)
		if s {
			o.del("suspect_height")
		} else if height > 0 {
			o.set("suspect_height", json.Number(strconv.FormatInt(height, 10)))
		}
		return true
	}
	forged := ""
	walkJSON(o, func(obj *jobj, k string) {
		s, ok := obj.get(k).(string)
		if !ok || !statusKeys[k] {
			return
		}
		if forged == "" {
			forged = flipStatus(s)
		}
		obj.set(k, forged)
	})
	return forged != ""
}

// walkJSON calls fn on every field of the objects in v, but those under
// keepKeys.
func walkJSON(v any, fn func(o *jobj, k string)) {
	switch t := v.(type) {
	case *jobj:
		for _, k := range slices.Clone(t.keys) {
			fn(t, k)
			if !keepKeys[k] {
				walkJSON(t.get(k), fn)
			}
		}
	case []any:
		for _, e := range t {
			walkJSON(e, fn)
		}
	}
}

// hideFirst drops the first element of a list answer.
func hideFirst(p *parsed) bool {
	list, ok := p.target.([]any)
	if !ok || len(list) == 0 {
		return false
	}
	p.replace(slices.Delete(slices.Clone(list), 0, 1))
	return true
}

// inventAlert adds an alert at the head of an alert list: see
// LieInventAlert.
func inventAlert(p *parsed, header http.Header) bool {
	list, ok := p.target.([]any)
	if !ok {
		return false
	}
	at := time.Now().UTC()
	if bt, err := time.Parse(time.RFC3339Nano, header.Get(server.HeaderBlockTime)); err == nil {
		at = bt.UTC()
	}
	height := p.height
	if height <= 0 {
		height = 1
	}
	var al *jobj
	if len(list) > 0 {
		if first, ok := list[0].(*jobj); ok {
			al = first.clone()
			from, _ := al.get("from").(string)
			to, _ := al.get("to").(string)
			al.set("from", to)
			al.set("to", from)
			if from == to {
				al.set("to", flipStatus(to))
			}
			al.del("deliveries")
		}
	}
	if al == nil {
		fresh, err := toJSONTree(api.Alert{Kind: "state_change", From: "passing", To: "critical", Service: "payments", Instance: "payments-1",
			Check: "http", Views: []api.ObserverView{}})
		if err != nil {
			return false
		}
		al = fresh.(*jobj)
	}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%v/%d/invented", al.get("id"), height)))
	al.set("id", hex.EncodeToString(sum[:16]))
	al.set("height", json.Number(strconv.FormatInt(height, 10)))
	al.set("time", at.Truncate(time.Millisecond).Format(time.RFC3339Nano))
	p.replace(append([]any{al}, list...))
	return true
}

// bufferedResponse holds an answer until the lie is decided.
type bufferedResponse struct {
	w      http.ResponseWriter
	header http.Header
	code   int
	body   bytes.Buffer
}

// Header is the answer's header.
func (b *bufferedResponse) Header() http.Header { return b.header }

// WriteHeader keeps the status code.
func (b *bufferedResponse) WriteHeader(code int) {
	if b.code == 0 {
		b.code = code
	}
}

// Write keeps the body.
func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.code == 0 {
		b.code = http.StatusOK
	}
	return b.body.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (b *bufferedResponse) Unwrap() http.ResponseWriter { return b.w }

// jobj is a JSON object that keeps its keys' order, so that a lie changes
// nothing of an answer but what it lies about.
type jobj struct {
	keys []string
	vals map[string]any
}

func (o *jobj) has(k string) bool { _, ok := o.vals[k]; return ok }
func (o *jobj) get(k string) any  { return o.vals[k] }

func (o *jobj) set(k string, v any) {
	if !o.has(k) {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = v
}

func (o *jobj) del(k string) {
	if o.has(k) {
		delete(o.vals, k)
		o.keys = slices.DeleteFunc(o.keys, func(x string) bool { return x == k })
	}
}

// clone copies o deeply.
func (o *jobj) clone() *jobj {
	c := &jobj{keys: slices.Clone(o.keys), vals: make(map[string]any, len(o.vals))}
	for k, v := range o.vals {
		c.vals[k] = cloneJSON(v)
	}
	return c
}

func cloneJSON(v any) any {
	switch t := v.(type) {
	case *jobj:
		return t.clone()
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = cloneJSON(e)
		}
		return out
	}
	return v
}

// MarshalJSON writes o with its keys in order.
func (o *jobj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := json.Marshal(o.vals[k])
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", k, err)
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// parseJSON reads one JSON value: objects as *jobj, arrays as []any,
// numbers as json.Number (as written), strings, bools and nil.
func parseJSON(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	v, err := parseValue(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("JSON: data after the value")
	}
	return v, nil
}

func parseValue(d *json.Decoder) (any, error) {
	t, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("JSON: %w", err)
	}
	delim, ok := t.(json.Delim)
	if !ok {
		return t, nil
	}
	switch delim {
	case '{':
		o := &jobj{vals: map[string]any{}}
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return nil, fmt.Errorf("JSON: %w", err)
			}
			k, _ := kt.(string)
			v, err := parseValue(d)
			if err != nil {
				return nil, err
			}
			o.set(k, v)
		}
		_, err = d.Token()
		return o, err
	case '[':
		list := []any{}
		for d.More() {
			v, err := parseValue(d)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
		_, err = d.Token()
		return list, err
	}
	return nil, fmt.Errorf("JSON: unexpected %v", delim)
}

// toJSONTree is v as parseJSON would read its JSON.
func toJSONTree(v any) (any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return parseJSON(b)
}

// encodeLike encodes v in the layout of orig: indented as the API writes
// its answers, or compact.
func encodeLike(orig []byte, v any) ([]byte, error) {
	if bytes.HasPrefix(orig, []byte("{\n")) || bytes.HasPrefix(orig, []byte("[\n")) {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if bytes.HasSuffix(orig, []byte("\n")) {
		b = append(b, '\n')
	}
	return b, nil
}
