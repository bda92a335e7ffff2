package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app"
)

// maxAnswer caps a proven answer read from a node (the proof bundle is
// capped again when it is verified).
const maxAnswer = 96 << 20

// Result is a verified answer: the height whose app hash the proofs were
// checked against, the HTTP status and index the plain route gives at that
// height, and the body rebuilt from the proven records (byte for byte what
// the plain route answers), with its headers.
type Result struct {
	Height int64
	Code   int
	Index  int64
	Body   []byte
	Header http.Header
}

// Client reads a node's HTTP API and accepts only answers it verified:
// the node's proofs checked against the app hash of a header the light
// client verified, and the answer rebuilt from the proven records equal to
// the node's. It is safe for concurrent use.
type Client struct {
	base    string
	hc      *http.Client
	headers *Headers
	floor   atomic.Int64 // the highest height accepted (or Raise'd)
}

// DefaultLockMaxAge is the most a header may be old for an answer about
// key/value entries and sessions (/v1/kv/, /v1/session/), where a lock's
// holder is read, whatever Options.MaxAge allows for other reads.
//
// The argument that two holders never both believe they lead on verified
// answers: a client that accepts "session A holds the lock" at its clock's
// now accepts it from a state at block time T_h ≥ now − DefaultLockMaxAge
// (the header's age is checked against the client's clock). Had A's
// session ended by then, that state would not show A holding; so it ends
// at a block time T_end > T_h, if at all. Another session may take the lock
// only in a block whose time is at least T_end + the lock-delay (a session
// ended by the app sets the lock-delay; one that releases the lock knows it
// does not hold it any more); with the default lock-delay of 15 s
// (app.DefaultLockDelayMs) that is after now − 10 s + 15 s = now + 5 s. So
// while A's client acts on an answer younger than its max age, no other
// session holds the lock, as long as clocks and block time agree within
// 5 s. A session with a lock-delay below DefaultLockMaxAge plus that skew
// (or none) waives the argument: the lock command warns of it. Heights only
// go up (Client.Floor), so a node cannot replay an older, still young,
// answer after a newer one was accepted.
const DefaultLockMaxAge = 10 * time.Second

// lockRoute tells whether a path reads key/value entries or sessions.
func lockRoute(path string) bool {
	return strings.HasPrefix(path, "/v1/kv/") || strings.HasPrefix(path, "/v1/session/")
}

// Floor is the highest height c accepted an answer from, or was raised to
// (Raise): c never accepts an answer from below it, and asks nodes for
// answers at or above it (api.MinHeightParam).
func (c *Client) Floor() int64 { return c.floor.Load() }

// Raise lifts c's floor to at least height: after a write committed at
// height H, Raise(H) makes every later verified read reflect it.
func (c *Client) Raise(height int64) {
	for {
		f := c.floor.Load()
		if height <= f || c.floor.CompareAndSwap(f, height) {
			return
		}
	}
}

// BackwardsError is an answer from below the height a client already
// accepted: an older answer replayed, which the client refuses. An honest
// node never gives one: the client asks with its floor as min_height, and
// a node behind waits for that height or answers 503.
type BackwardsError struct {
	// Height is the answer's; Floor the client's when it was refused.
	Height, Floor int64
}

func (e *BackwardsError) Error() string {
	return fmt.Sprintf("the answer is from height %d, below height %d that this client already accepted: a node replays an old answer: %v", e.Height, e.Floor, ErrNotVerified)
}

// Unwrap makes a BackwardsError match ErrNotVerified.
func (e *BackwardsError) Unwrap() error { return ErrNotVerified }

// NewClient returns a verifying client of the node's API at addr
// ("host:port" or a URL) whose headers h verifies.
func NewClient(addr string, h *Headers) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	// A blocking read (?index=) may take up to the server's MaxWait.
	return &Client{base: strings.TrimRight(addr, "/"), hc: &http.Client{Timeout: server.MaxWait + time.Minute}, headers: h}
}

// Headers is the light client c verifies against.
func (c *Client) Headers() *Headers { return c.headers }

// Get reads pathAndQuery ("/v1/services/web?status=passing") with proof=1
// and returns the verified answer. Every failure matches ErrNotVerified and
// says what did not verify. Heights only go up: an answer from below the
// Floor when the read was sent is refused (BackwardsError), and an accepted
// one raises Floor, so a read that starts after another returned is never
// answered from an older state (reads that overlap in time may return in
// either order, as concurrent operations do). A key/value or session
// answer must be at most DefaultLockMaxAge old.
func (c *Client) Get(ctx context.Context, pathAndQuery string) (Result, error) {
	u, err := url.Parse(pathAndQuery)
	if err != nil {
		return Result{}, fmt.Errorf("GET %s: %v: %w", pathAndQuery, err, ErrNotVerified)
	}
	what := "GET " + u.Path
	q := u.Query()
	q.Set("proof", "1")
	floor := c.floor.Load()
	if floor > 0 {
		q.Set(api.MinHeightParam, strconv.FormatInt(floor, 10))
	}
	u.RawQuery = q.Encode()
	p, err := c.fetch(ctx, u.RequestURI())
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", what, err)
	}
	if p.Height < floor {
		return Result{}, fmt.Errorf("%s: %w", what, &BackwardsError{Height: p.Height, Floor: floor})
	}
	maxAge := c.headers.MaxAge()
	if lockRoute(u.Path) {
		maxAge = min(maxAge, DefaultLockMaxAge)
	}
	appHash, _, err := c.headers.appHash(ctx, p.Height, maxAge)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", what, err)
	}
	r, err := verifyProofs(p.Proofs, appHash)
	if err != nil {
		return Result{}, fmt.Errorf("%s: proofs at height %d: %v: %w", what, p.Height, err, ErrNotVerified)
	}
	res, err := Rebuild(ctx, r, pathAndQuery)
	if err != nil {
		return Result{}, fmt.Errorf("%s: rebuild the answer at height %d from the proven records: %v: %w", what, p.Height, err, ErrNotVerified)
	}
	res.Height = p.Height
	if res.Code != p.Code {
		return Result{}, fmt.Errorf("%s: answer differs at height %d: the node says HTTP %d, the proven records HTTP %d (%s): %w",
			what, p.Height, p.Code, res.Code, firstLine(res.Body), ErrNotVerified)
	}
	rebuilt := res.Body
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
		// A plain-text answer (Consul's errors) travels as a JSON string.
		rebuilt, _ = json.Marshal(string(res.Body))
	}
	if d := answerDiff(p.Answer, rebuilt); d != "" {
		return Result{}, fmt.Errorf("%s: answer differs at height %d: %s: %w", what, p.Height, d, ErrNotVerified)
	}
	if res.Header.Get(api.IndexHeader) != "" && res.Index != p.Index {
		return Result{}, fmt.Errorf("%s: answer differs at height %d: the node says index %d, the proven records %d: %w", what, p.Height, p.Index, res.Index, ErrNotVerified)
	}
	c.Raise(p.Height)
	return res, nil
}

// fetch GETs a proven answer.
func (c *Client) fetch(ctx context.Context, uri string) (*proven, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+uri, nil)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrNotVerified)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("node %s: %v: %w", c.base, err, ErrNotVerified)
	}
	defer resp.Body.Close()
	bz, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("node %s: read the answer: %v: %w", c.base, err, ErrNotVerified)
	}
	if len(bz) > maxAnswer {
		return nil, fmt.Errorf("node %s: proven answer over %d MiB: %w", c.base, maxAnswer>>20, ErrNotVerified)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(bz))
		var e api.Error
		if json.Unmarshal(bz, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return nil, fmt.Errorf("node refused proof: HTTP %d: %s: %w", resp.StatusCode, msg, ErrNotVerified)
	}
	var p proven
	if err := json.Unmarshal(bz, &p); err != nil {
		return nil, fmt.Errorf("node sent no proven answer: %v: %w", err, ErrNotVerified)
	}
	if p.Height < 1 || p.Code == 0 || p.Proofs == nil {
		return nil, fmt.Errorf("node sent no proofs (height %d, code %d): %w", p.Height, p.Code, ErrNotVerified)
	}
	return &p, nil
}

// Rebuild answers pathAndQuery the way the node's plain route does, from
// r (server.Replay): the same handlers over the proven records, with the
// plain answer's exact bytes and headers (Content-Type, X-Bftmon-Index,
// X-Consul-Index), which the proxy serves.
func Rebuild(ctx context.Context, r app.Reader, pathAndQuery string) (Result, error) {
	out, err := server.Replay(ctx, r, http.MethodGet, pathAndQuery)
	if err != nil {
		return Result{}, err
	}
	res := Result{Code: out.Code, Body: out.Body, Header: out.Header}
	if v := out.Header.Get(api.IndexHeader); v != "" {
		res.Index, _ = strconv.ParseInt(v, 10, 64)
	}
	return res, nil
}

// firstLine is the start of an answer for an error message.
func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	var e api.Error
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		s = e.Error
	}
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// answerDiff is jsonDiff with a fast path: the node sends its answer
// compacted, so equal answers are equal bytes once the rebuilt one is
// compacted too; only others are decoded and walked.
func answerDiff(node, rebuilt []byte) string {
	var a, b bytes.Buffer
	if json.Compact(&a, node) == nil && json.Compact(&b, rebuilt) == nil && bytes.Equal(a.Bytes(), b.Bytes()) {
		return ""
	}
	return jsonDiff(node, rebuilt)
}

// jsonDiff says where two JSON documents differ ("" if they are equal as
// JSON): the first differing path with both values.
func jsonDiff(node, rebuilt []byte) string {
	var a, b any
	if err := json.Unmarshal(node, &a); err != nil {
		return fmt.Sprintf("the node's answer is no JSON: %v", err)
	}
	if err := json.Unmarshal(rebuilt, &b); err != nil {
		return fmt.Sprintf("the rebuilt answer is no JSON: %v", err)
	}
	return diffAt("$", a, b)
}

func diffAt(path string, a, b any) string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			break
		}
		keys := make([]string, 0, len(av)+len(bv))
		for k := range av {
			keys = append(keys, k)
		}
		for k := range bv {
			if _, ok := av[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			if d := diffAt(path+"."+k, av[k], bv[k]); d != "" {
				return d
			}
		}
		return ""
	case []any:
		bv, ok := b.([]any)
		if !ok {
			break
		}
		for i := range min(len(av), len(bv)) {
			if d := diffAt(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i]); d != "" {
				return d
			}
		}
		if len(av) != len(bv) {
			return fmt.Sprintf("%s: the node says %d entries, the proven records %d", path, len(av), len(bv))
		}
		return ""
	}
	if reflect.DeepEqual(a, b) {
		return ""
	}
	return fmt.Sprintf("%s: the node says %s, the proven records %s", path, short(a), short(b))
}

func short(v any) string {
	if v == nil {
		return "nothing"
	}
	bz, _ := json.Marshal(v)
	if len(bz) > 120 {
		return string(bz[:120]) + "..."
	}
	return string(bytes.TrimSpace(bz))
}
