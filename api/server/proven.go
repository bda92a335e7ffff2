package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/proof"
)

// Proven reads: every read route of the agreed state also answers
// ?proof=1 with api.Proven, built by the same route code over a
// proof.Recorder at the newest provable version; Rebuild is the client's
// half, which runs that code again over the verified records.

// ProvingReader reads one committed version of the state and proves what
// it reads; a *store.Reader is one.
type ProvingReader interface {
	app.Reader
	proof.Prover
	// Version is the version read.
	Version() int64
}

// wantsProof tells whether r asks for the proven form: ?proof, ?proof=1 or
// ?proof=true (?proof=0 and ?proof=false ask for the plain one).
func wantsProof(r *http.Request) (bool, error) {
	v, ok := r.URL.Query()[api.ProofParam]
	if !ok {
		return false, nil
	}
	switch x := v[0]; x {
	case "", "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	default:
		return false, fmt.Errorf("parameter %s=%q: want 1 or true", api.ProofParam, x)
	}
}

type provingKey struct{}

// proving tells whether the request being answered asked for the proven
// form: its answer may then depend on nothing but the state read (not on
// this node's own status, say).
func proving(ctx context.Context) bool { return ctx.Value(provingKey{}) != nil }

// provable serves a route that has a proven form: it marks a request
// asking for it (proving) and answers 400 for a bad ?proof=.
func provable(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		on, err := wantsProof(r)
		if err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		if on {
			r = r.WithContext(context.WithValue(r.Context(), provingKey{}, true))
		}
		h(w, r)
	}
}

// provableRoute registers a route that has a proven form (provable) and
// lists it among the server's ProvableRoutes.
func (s *Server) provableRoute(mux *http.ServeMux, pattern string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, provable(h))
	s.provableRoutes = append(s.provableRoutes, pattern)
}

// ProvableRoutes are the patterns of every route that answers ?proof=1, in
// the order the server registers them: the reads of the agreed state. The
// lying test node lies on each of them, and the verifying proxy proves
// each (a test fails when a route is added that either misses).
func ProvableRoutes() []string {
	s := New(nil, Config{}, slog.New(slog.DiscardHandler))
	return slices.Clone(s.provableRoutes)
}

// unprovable serves a route whose answer is no function of the agreed
// state (the node's own status, a transaction's fate, an app hash, which
// the headers prove): ?proof=1 answers 400.
func unprovable(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if on, err := wantsProof(r); on || err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Sprintf("%s %s has no proven form (?%s= is for reads of the agreed state: /v1/services, /v1/checks, /v1/alerts, /v1/observers, /v1/receivers, the Consul subset, /v1/sd/prometheus)", r.Method, r.URL.Path, api.ProofParam))
			return
		}
		h(w, r)
	}
}

// proven answers the proven form of a read at the newest provable version
// (the latest minus one: the header of height H+1 carries the app hash of
// H), or takes it from the cache of that version.
func (s *Server) proven(r *http.Request, read answer) (cachedAnswer, error) {
	latest, err := s.b.ReadAt(0)
	if err != nil {
		return cachedAnswer{}, fmt.Errorf("proven read: %w", err)
	}
	v := latest.Version() - 1
	if v < 1 {
		return cachedAnswer{}, fmt.Errorf("proven read: no version is provable yet (the app hash of height %d is in the header of height %d, not committed yet): %w",
			latest.Version(), latest.Version()+1, api.ErrNotReady)
	}
	vals := r.URL.Query()
	vals.Del(api.MinHeightParam) // met by reach: the answer is the same
	key := r.URL.Path + "?" + vals.Encode()
	if a, ok := s.proofs.get(v, key); ok {
		return a, nil
	}
	pr, err := s.b.ReadAt(v)
	if err != nil {
		return cachedAnswer{}, fmt.Errorf("proven read at %d: %w", v, err)
	}
	rec := proof.NewRecorder(pr)
	q, err := app.NewQuery(rec)
	if err != nil {
		return cachedAnswer{}, fmt.Errorf("proven read at %d: %w", v, err)
	}
	plain, err := compute(q, read)
	if err != nil {
		return cachedAnswer{}, err
	}
	bundle, err := proof.Prove(pr, rec)
	if err != nil {
		return cachedAnswer{}, fmt.Errorf("proven read at %d: %w", v, err)
	}
	ans, err := answerJSON(plain.body, plain.text)
	if err != nil {
		return cachedAnswer{}, err
	}
	body, err := encode(api.Proven{Height: v, Code: plain.code, Index: plain.index, Answer: ans, Proofs: bundle})
	if err != nil {
		return cachedAnswer{}, fmt.Errorf("encode the proven answer: %w", err)
	}
	a := cachedAnswer{code: http.StatusOK, index: plain.index, body: body, final: plain.final, height: v, blockTime: plain.blockTime}
	s.proofs.put(v, key, a)
	return a, nil
}

// answerJSON is a plain answer's body as api.Proven's Answer carries it:
// compact JSON, or the JSON string of a plain-text body.
func answerJSON(body []byte, text bool) (json.RawMessage, error) {
	if text {
		return json.Marshal(string(body))
	}
	var b bytes.Buffer
	if err := json.Compact(&b, body); err != nil {
		return nil, fmt.Errorf("compact the answer: %w", err)
	}
	return b.Bytes(), nil
}

// Rebuilt is a plain answer rebuilt from proven records: its status,
// headers and body, byte for byte as the plain route writes them.
type Rebuilt struct {
	Code   int
	Header http.Header
	Body   []byte
}

// Replay answers a read (method and path with its query, as sent with
// ?proof=1) as the node's plain route answers it from the records r reads,
// typically the reader proof.Verify returned: it runs the route's own code
// in an in-process server whose Backend reads app.NewQuery(r). ?proof=,
// ?index=, ?wait= and ?min_height= are dropped (a replay never blocks). A read of
// something r does not serve (an unproven key: proof.ErrNotProven) fails
// with an error; so does any other failed read (HTTP 500), but for
// Consul's plain-text 500s, which are answers of the state.
func Replay(ctx context.Context, r app.Reader, method, pathAndQuery string) (Rebuilt, error) {
	u, err := url.Parse(pathAndQuery)
	if err != nil || !strings.HasPrefix(u.Path, "/") || u.Host != "" {
		return Rebuilt{}, fmt.Errorf("rebuild %s %q: want a path and query", method, pathAndQuery)
	}
	vals := u.Query()
	for _, p := range []string{api.ProofParam, "index", "wait", api.MinHeightParam} {
		vals.Del(p)
	}
	u.RawQuery = vals.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return Rebuilt{}, fmt.Errorf("rebuild %s %s: %w", method, u, err)
	}
	rec := httptest.NewRecorder()
	New(&rebuildBackend{r: r}, Config{}, slog.New(slog.DiscardHandler)).ServeHTTP(rec, req)
	out := Rebuilt{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
	if rec.Code == http.StatusInternalServerError && !isText(out.Header) {
		var e api.Error
		if json.Unmarshal(out.Body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(out.Body))
		}
		return out, fmt.Errorf("rebuild %s %s: %s", method, u, e.Error)
	}
	return out, nil
}

// isText tells whether an answer is plain text (Consul's errors), not
// JSON.
func isText(h http.Header) bool { return !strings.HasPrefix(h.Get("Content-Type"), "application/json") }

// Rebuild is Replay with the body as api.Proven's Answer carries it
// (compact JSON, or a JSON string for plain text), to compare with the
// node's once that is compacted too (json.Compact).
func Rebuild(ctx context.Context, r app.Reader, method, pathAndQuery string) (code int, body []byte, err error) {
	out, err := Replay(ctx, r, method, pathAndQuery)
	if err != nil {
		return out.Code, nil, err
	}
	if body, err = answerJSON(out.Body, isText(out.Header)); err != nil {
		return 0, nil, fmt.Errorf("rebuild %s %s: %w", method, pathAndQuery, err)
	}
	return out.Code, body, nil
}

// errRebuild is what a rebuild's Backend answers for anything but the
// state it reads.
var errRebuild = errors.New("not part of the agreed state (a rebuild reads only proven records)")

// rebuildBackend serves a rebuild: the state from its reader, nothing
// else.
type rebuildBackend struct{ r app.Reader }

func (b *rebuildBackend) Read() (*app.Query, error) { return app.NewQuery(b.r) }

func (b *rebuildBackend) ReadAt(int64) (ProvingReader, error) {
	return nil, fmt.Errorf("proofs: %w", errRebuild)
}

func (b *rebuildBackend) Status(context.Context) (api.Status, error) {
	return api.Status{}, fmt.Errorf("status: %w", errRebuild)
}

func (b *rebuildBackend) BroadcastTx(context.Context, []byte) (api.TxResult, error) {
	return api.TxResult{}, fmt.Errorf("broadcast: %w", errRebuild)
}

func (b *rebuildBackend) Tx(context.Context, string) (api.TxResult, error) {
	return api.TxResult{}, fmt.Errorf("tx: %w", errRebuild)
}

func (b *rebuildBackend) AppHash(int64) ([]byte, error) {
	return nil, fmt.Errorf("app hash: %w", errRebuild)
}

func (b *rebuildBackend) Observe(context.Context, api.PassiveResult) (api.ObserveAck, error) {
	return api.ObserveAck{}, fmt.Errorf("observe: %w", errRebuild)
}
