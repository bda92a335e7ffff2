package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/app/types"
)

// ReuseFor is how long the proxy answers the same request with an answer
// it verified, without asking the node again.
const ReuseFor = 500 * time.Millisecond

// VerifiedHeightHeader is the response header in which the proxy says at
// which height it verified an answer.
const VerifiedHeightHeader = "X-Bftmon-Verified-Height"

// Proxy serves a node's read API (native and Consul subset, http_sd) only
// with answers it verified (Client.Get), so that clients that cannot verify
// (Prometheus, Consul clients) read through it unchanged. A read that does
// not verify is answered 502 with the reason in the API's error JSON.
// Writes pass on to the node (POST /v1/txs, and Consul's key/value, txn
// and session writes, which the node signs with its token's key), and the
// node's answer reaches the client only once the proxy proved that the
// transaction committed with that result (committed); after it, every
// read through the proxy reflects the write. GET /v1/status describes the
// newest verified header. Other writes are refused. The same request is
// answered from one verified answer for up to ReuseFor, and concurrent
// ones share one.
type Proxy struct {
	c    *Client
	log  *slog.Logger
	pass *httputil.ReverseProxy

	group singleflight.Group
	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	res Result
	at  time.Time
}

// NewProxy returns a proxy of the node c reads.
func NewProxy(c *Client, logger *slog.Logger) (*Proxy, error) {
	u, err := url.Parse(c.base)
	if err != nil {
		return nil, fmt.Errorf("proxy: node address %s: %w", c.base, err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	p := &Proxy{c: c, log: logger, cache: map[string]cached{}}
	p.pass = &httputil.ReverseProxy{
		Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(u) },
		ModifyResponse: p.committed,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("node %s: %v", c.base, err))
		},
	}
	return p, nil
}

// ServeHTTP answers one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/txs", server.SignedWrite(r.Method, r.URL.Path):
		p.write(w, r)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: the verifying proxy serves reads, and passes POST /v1/txs and Consul's key/value, txn and session writes on", r.Method, r.URL.Path))
	case r.URL.Path == "/v1/status":
		p.status(w, r)
	case r.URL.Path == "/v1/status/leader":
		// Consul clients ask who leads; the proxy is their server.
		writeJSON(w, http.StatusOK, r.Host)
	case r.URL.Path == "/v1/status/peers":
		writeJSON(w, http.StatusOK, []string{r.Host})
	case r.URL.Path == "/v1/agent/self":
		p.agentSelf(w, r)
	default:
		p.read(w, r)
	}
}

// pendingWrite is what the proxy keeps of a write it passes on, to check
// the node's answer: the request's body, and the newest height verified
// before it was sent (a write the node signs cannot have committed at or
// below it).
type pendingWrite struct {
	body  []byte
	bound int64
}

type pendingKey struct{}

// write passes a write on to the node, keeping what committed needs.
func (p *Proxy) write(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, server.MaxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s %s: read the body (at most %d bytes): %v", r.Method, r.URL.Path, server.MaxBody, err))
		return
	}
	pw := &pendingWrite{body: body, bound: max(p.c.Floor(), p.c.headers.LastVerified())}
	r = r.WithContext(context.WithValue(r.Context(), pendingKey{}, pw))
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	p.pass.ServeHTTP(w, r)
}

// committed checks the node's answer to a write before the client gets
// it. The node says which transaction the write was and where it
// committed (server.HeaderTx and server.HeaderCommitHeight; for POST
// /v1/txs the answer's hash and height), and the proxy proves that the
// transaction is in that block with the result the next header commits to
// (Headers.CommittedTx), that it is this request's write and the answer
// the one the node's server gives for that result (server.CheckWrite),
// and, for a write the node signed, that it committed above the newest
// height verified before the request was sent (not an older transaction's
// outcome). Then it raises the proxy's floor to that height, so that every
// later read through the proxy reflects the write (Consul's Lock helper
// reads its key right after acquiring it). An answer that does not prove
// is refused: 502, whatever the node said. A refusal (nothing committed)
// is the node's word, passed on as it is.
func (p *Proxy) committed(resp *http.Response) error {
	pw, _ := resp.Request.Context().Value(pendingKey{}).(*pendingWrite)
	if pw == nil {
		return nil
	}
	req := resp.Request
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read the node's answer: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	var height int64
	if req.URL.Path == "/v1/txs" {
		var res api.TxResult
		if resp.StatusCode != http.StatusOK || json.Unmarshal(answer, &res) != nil || res.Height == 0 {
			return nil // refused, or not committed: the node's word
		}
		c, err := p.c.headers.CommittedTx(ctx, res.Height, res.Hash, SameContent(pw.body))
		if err != nil {
			return err
		}
		if c.Code != res.Code || types.TxHash(c.Tx) != res.Hash {
			return fmt.Errorf("the node answered code %d for %s; block %d holds %s with code %d: %w", res.Code, res.Hash, res.Height, types.TxHash(c.Tx), c.Code, ErrNotVerified)
		}
		height = c.Height
	} else {
		hash, hv := resp.Header.Get(server.HeaderTx), resp.Header.Get(server.HeaderCommitHeight)
		if hash == "" || hv == "" {
			if resp.StatusCode/100 == 2 {
				return fmt.Errorf("the node answered %s %s with success but did not say which transaction committed it (%s, %s): %w", req.Method, req.URL.Path, server.HeaderTx, server.HeaderCommitHeight, ErrNotVerified)
			}
			return nil
		}
		h, err := strconv.ParseInt(hv, 10, 64)
		if err != nil || h < 1 {
			return fmt.Errorf("the node answered a write committed at height %q: %w", hv, ErrNotVerified)
		}
		if h <= pw.bound {
			return fmt.Errorf("the node answered a write committed at height %d, at or below height %d verified before it was sent: an older transaction's outcome: %w", h, pw.bound, ErrNotVerified)
		}
		c, err := p.c.headers.CommittedTx(ctx, h, hash, TxHashIs(hash))
		if err != nil {
			return err
		}
		if err := server.CheckWrite(req.Method, req.URL, pw.body, c.Tx, c.Code, resp.StatusCode, answer); err != nil {
			return fmt.Errorf("%s %s: %w: %w", req.Method, req.URL.Path, err, ErrNotVerified)
		}
		height = c.Height
	}
	p.c.Raise(height)
	resp.Header.Set(VerifiedHeightHeader, strconv.FormatInt(height, 10))
	return nil
}

// read answers a GET from a verified answer.
func (p *Proxy) read(w http.ResponseWriter, r *http.Request) {
	key := r.URL.RequestURI()
	blocking := r.URL.Query().Has("index")
	if r.URL.Query().Has("consistent") {
		// Consul's ?consistent: no answer older than what the network had
		// committed when the read arrived. The newest verified header's
		// state becomes the floor; the read waits for it.
		sh, err := p.c.headers.Latest(r.Context())
		if err != nil {
			writeError(w, http.StatusBadGateway, fmt.Sprintf("?consistent: the newest header: %v", err))
			return
		}
		p.c.Raise(sh.Height - 1)
	}
	var res Result
	var err error
	if blocking {
		res, err = p.c.Get(r.Context(), key)
	} else {
		res, err = p.shared(r.Context(), key)
	}
	if err != nil {
		p.log.Warn("proxy: answer not verified", "request", key, "err", err)
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	for k, vs := range res.Header {
		w.Header()[k] = vs
	}
	w.Header().Set(VerifiedHeightHeader, strconv.FormatInt(res.Height, 10))
	w.WriteHeader(res.Code)
	if r.Method != http.MethodHead {
		w.Write(res.Body)
	}
}

// shared is the verified answer to key: one of the last ReuseFor, or one
// fetched now, once for all who ask meanwhile.
func (p *Proxy) shared(ctx context.Context, key string) (Result, error) {
	p.mu.Lock()
	c, ok := p.cache[key]
	p.mu.Unlock()
	if ok && time.Since(c.at) < ReuseFor && c.res.Height >= p.c.Floor() {
		// Never below what the proxy accepted since: heights only go up.
		return c.res, nil
	}
	v, err, _ := p.group.Do(key, func() (any, error) {
		// Not the first asker's context: its going away must not fail
		// the others.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		res, err := p.c.Get(ctx, key)
		if err != nil {
			return Result{}, err
		}
		p.mu.Lock()
		now := time.Now()
		for k, c := range p.cache { // keep it small: drop the expired
			if now.Sub(c.at) >= ReuseFor {
				delete(p.cache, k)
			}
		}
		p.cache[key] = cached{res, now}
		p.mu.Unlock()
		return res, nil
	})
	if err != nil {
		return Result{}, err
	}
	return v.(Result), nil
}

// status describes the newest header the proxy verified: its height minus
// one (the state whose app hash it carries) and that app hash.
func (p *Proxy) status(w http.ResponseWriter, r *http.Request) {
	sh, err := p.c.headers.Latest(r.Context())
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	st := api.Status{
		ChainID: p.c.headers.ChainID(), Height: sh.Height - 1, AppHash: fmt.Sprintf("%X", sh.AppHash),
		BlockTime: sh.Time.UTC(), LastCommit: sh.Time.UTC(), Version: "verifying-proxy", Committing: true,
	}
	code := http.StatusOK
	if age := p.c.headers.opts.Now().Sub(sh.Time); age > p.c.headers.opts.MaxAge {
		st.Committing, st.Problem = false, fmt.Sprintf("the newest verified header %d is %s old (max age %s)", sh.Height, age.Round(time.Second), p.c.headers.opts.MaxAge)
		code = http.StatusServiceUnavailable
	}
	w.Header().Set(VerifiedHeightHeader, strconv.FormatInt(sh.Height-1, 10))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body, _ := json.MarshalIndent(struct {
		api.Status
		Error string `json:"error,omitempty"`
	}{st, st.Problem}, "", "  ")
	w.Write(append(body, '\n'))
}

// agentSelf answers Consul's /v1/agent/self for the proxy itself (the
// node's describes that node and has no proven form): its datacenter is
// the first of the verified observers' datacenters, as a node without an
// observer of its own reports it; Prometheus' Consul discovery reads it
// when it is given no datacenter.
func (p *Proxy) agentSelf(w http.ResponseWriter, r *http.Request) {
	res, err := p.shared(r.Context(), "/v1/observers")
	if err == nil && res.Code != http.StatusOK {
		err = fmt.Errorf("GET /v1/observers: HTTP %d", res.Code)
	}
	var obs []api.Observer
	if err == nil {
		err = json.Unmarshal(res.Body, &obs)
	}
	if err != nil {
		writeError(w, http.StatusBadGateway, err.Error())
		return
	}
	dc := "dc1"
	for i, o := range obs {
		if i == 0 || o.Datacenter < dc {
			dc = o.Datacenter
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	chain := p.c.headers.ChainID()
	w.Header().Set(VerifiedHeightHeader, strconv.FormatInt(res.Height, 10))
	writeJSON(w, http.StatusOK, map[string]any{
		"Config": map[string]any{"Datacenter": dc, "NodeName": "bftmon-proxy", "NodeID": "bftmon-proxy", "Server": true, "Revision": "", "Version": "bftmon-verifying-proxy"},
		"Member": map[string]any{"Name": "bftmon-proxy", "Addr": host, "Port": 0, "Tags": map[string]string{"dc": dc, "role": "bftmon"}, "Status": 1},
		"Meta":   map[string]string{"bftmon_chain_id": chain},
	})
}

// writeJSON answers code with v as indented JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body, _ := json.MarshalIndent(v, "", "  ")
	w.Write(append(body, '\n'))
}

// writeError answers code with the API's error JSON.
func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	body, _ := json.MarshalIndent(api.Error{Error: strings.TrimSpace(msg)}, "", "  ")
	w.Write(append(body, '\n'))
}
