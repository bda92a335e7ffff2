package verify

import (
	"context"
	"encoding/json"
	"fmt"
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
// POST /v1/txs passes through (a transaction is signed: the node cannot
// forge one); GET /v1/status describes the newest verified header. Other
// writes are refused. The same request is answered from one verified
// answer for up to ReuseFor, and concurrent ones share one.
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
	case r.Method == http.MethodPost && r.URL.Path == "/v1/txs", consulWrite(r):
		p.pass.ServeHTTP(w, r)
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

// committed reads the height a write the node answered committed at
// (server.HeaderCommitHeight) and raises the proxy's floor to it, once a
// verified header shows the chain reached that height: every later read
// through the proxy is answered from that state or a newer one, so it
// reflects the write (Consul's Lock helper reads its key right after
// acquiring it). A height the chain has not reached is refused: 502,
// whatever the node said, so that a node cannot stall every later read
// with an invented height.
func (p *Proxy) committed(resp *http.Response) error {
	v := resp.Header.Get(server.HeaderCommitHeight)
	if v == "" {
		return nil
	}
	h, err := strconv.ParseInt(v, 10, 64)
	if err != nil || h < 1 {
		return fmt.Errorf("the node answered a write committed at height %q: %w", v, ErrNotVerified)
	}
	ctx, cancel := context.WithTimeout(resp.Request.Context(), 30*time.Second)
	defer cancel()
	if _, err := p.c.headers.Header(ctx, h); err != nil {
		return fmt.Errorf("the node answered a write committed at height %d, which no verified header shows: %w", h, err)
	}
	p.c.Raise(h)
	return nil
}

// consulWrite tells whether r is a Consul-style write (PUT or DELETE
// /v1/kv/..., PUT or POST /v1/txn, PUT /v1/session/...), which the proxy
// passes on to the node like POST /v1/txs: the node signs it with the key
// its token maps to, and the network decides it. Its answer (true, false,
// a txn's results) is the node's word, not verified; what a client then
// reads through the proxy is.
func consulWrite(r *http.Request) bool {
	switch {
	case strings.HasPrefix(r.URL.Path, "/v1/kv/"):
		return r.Method == http.MethodPut || r.Method == http.MethodDelete
	case r.URL.Path == "/v1/txn":
		return r.Method == http.MethodPut || r.Method == http.MethodPost
	case strings.HasPrefix(r.URL.Path, "/v1/session/"):
		return r.Method == http.MethodPut
	}
	return false
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
