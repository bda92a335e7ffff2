package api

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// Client talks to one node's HTTP API.
type Client struct {
	base string
	hc   *http.Client
	// wait is how long one request keeps retrying while the node cannot
	// answer yet (WithWait); progress, if set, gets a line about it.
	wait     time.Duration
	progress io.Writer
}

// WithWait returns a copy of c whose requests, for up to wait each, wait
// for a node that cannot answer yet and try again: a node not listening yet
// (connection refused, a host name that does not resolve yet), and a node
// answering 503 that it took nothing (Retry-After: catching up with its
// peers, or busy reading other bodies) or, to a read, that it is not
// committing. Each retry writes a progress line to progress (nil: none),
// at most one every few seconds unless the reason changes. A request the
// node may have taken is never sent twice by this; signed transactions
// are the same bytes when sent again (Register and the like), which the
// network commits at most once. wait 0 fails at once, as NewClient does.
func (c *Client) WithWait(wait time.Duration, progress io.Writer) *Client {
	cp := *c
	cp.wait, cp.progress = wait, progress
	return &cp
}

// NewClient returns a client of the node at addr ("host:port" or a URL).
func NewClient(addr string) *Client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{base: strings.TrimRight(addr, "/"), hc: &http.Client{Timeout: 60 * time.Second}}
}

// Addr is the node's base URL.
func (c *Client) Addr() string { return c.base }

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	_, err := c.read(ctx, method, path, body, out)
	return err
}

// read is do returning the response's query meta.
func (c *Client) read(ctx context.Context, method, path string, body []byte, out any) (QueryMeta, error) {
	return c.call(ctx, request{method: method, path: path, body: body}, out)
}

// request is one call of the API.
type request struct {
	method, path string
	body         []byte
	// contentType is the body's (default application/octet-stream).
	contentType string
	// token, if set, is sent as Authorization: Bearer token.
	token string
	// status, if set, receives the body of a 503 from GET /v1/status.
	status *Status
}

// call sends r and decodes the answer into out, returning the response's
// query meta; while the node cannot answer yet it waits and retries, for up
// to c.wait (WithWait).
func (c *Client) call(ctx context.Context, r request, out any) (QueryMeta, error) {
	start := time.Now()
	deadline := start.Add(c.wait)
	var lastReason string
	var lastLine time.Time
	for attempt := 0; ; attempt++ {
		meta, err := c.callOnce(ctx, r, out)
		reason, retry := c.retryable(r, err)
		if !retry || c.wait <= 0 {
			return meta, err
		}
		pause := min(200*time.Millisecond<<min(attempt, 4), 2*time.Second)
		if time.Now().Add(pause).After(deadline) {
			return meta, fmt.Errorf("%w (waited %s for the node; wait longer with --wait)", err, time.Since(start).Round(time.Second))
		}
		if c.progress != nil && (reason != lastReason || time.Since(lastLine) >= progressEvery) {
			fmt.Fprintf(c.progress, "waiting for node at %s: %s (%s of %s) ...\n", c.base, reason,
				time.Since(start).Round(time.Second), c.wait.Round(time.Second))
			lastReason, lastLine = reason, time.Now()
		}
		select {
		case <-ctx.Done():
			return meta, fmt.Errorf("%w (gave up waiting for the node: %v)", err, ctx.Err())
		case <-time.After(pause):
		}
	}
}

// progressEvery is how often a client that keeps waiting for the same
// reason says so again.
const progressEvery = 5 * time.Second

// notReadyError is a 503 the node answered: it could not take the request
// now. taken tells whether it may have taken it all the same (no
// Retry-After).
type notReadyError struct {
	msg    string
	status *Status // the body of GET /v1/status, if that was the request
	taken  bool
}

func (e *notReadyError) Error() string { return e.msg }

// Unwrap makes a 503 that took nothing match ErrNotReady.
func (e *notReadyError) Unwrap() error {
	if e.taken {
		return nil
	}
	return ErrNotReady
}

// retryable tells whether r may be sent again after err, and why the node
// could not answer, for the progress line.
func (c *Client) retryable(r request, err error) (string, bool) {
	if err == nil {
		return "", false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		// Nothing was sent.
		var dnsErr *net.DNSError
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return "connection refused (not listening yet)", true
		case errors.As(err, &dnsErr):
			return "host name " + dnsErr.Name + " does not resolve (yet)", true
		}
		return op.Err.Error(), true
	}
	var nr *notReadyError
	if !errors.As(err, &nr) || nr.taken {
		return "", false
	}
	if st := nr.status; st != nil {
		switch {
		case st.CatchingUp:
			h := fmt.Sprintf("height %d", st.Height)
			if st.PeerHeight > st.Height {
				h += fmt.Sprintf(" of %d", st.PeerHeight)
			}
			return fmt.Sprintf("catching up (%s, %d of %d peers connected)", h, st.Peers, st.ExpectedPeers), true
		case st.Peers < st.ExpectedPeers && st.ExpectedPeers > 0:
			return fmt.Sprintf("not committing at height %d, %d of %d peers connected", st.Height, st.Peers, st.ExpectedPeers), true
		}
	}
	return nr.msg, true
}

// callOnce sends r once and decodes the answer into out, returning the
// response's query meta.
func (c *Client) callOnce(ctx context.Context, r request, out any) (QueryMeta, error) {
	method, path := r.method, r.path
	var meta QueryMeta
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(r.body))
	if err != nil {
		return meta, err
	}
	if r.body != nil {
		ct := r.contentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		req.Header.Set("Content-Type", ct)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return meta, fmt.Errorf("cannot reach bftmon at %s (is a node running? start one with 'bftmon dev' or set --addr/BFTMON_ADDR): %w", c.base, err)
		}
		return meta, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if v := resp.Header.Get(IndexHeader); v != "" {
		meta.Index, _ = strconv.ParseInt(v, 10, 64)
	}
	bz, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return meta, fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e Error
		msg := strings.TrimSpace(string(bz))
		if json.Unmarshal(bz, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		switch resp.StatusCode {
		case http.StatusNotFound:
			return meta, &statusError{msg, ErrNotFound}
		case http.StatusBadRequest, http.StatusForbidden, http.StatusConflict:
			return meta, &statusError{msg, ErrBadRequest}
		case http.StatusUnauthorized:
			return meta, &statusError{msg, ErrUnauthorized}
		case http.StatusServiceUnavailable:
			// A read takes nothing; a write answered without Retry-After
			// may have been taken.
			nr := &notReadyError{msg: fmt.Sprintf("%s %s: HTTP 503: %s", method, path, msg), taken: method != http.MethodGet && resp.Header.Get("Retry-After") == ""}
			if path == statusPath {
				var st Status
				if json.Unmarshal(bz, &st) == nil && st.ChainID != "" {
					nr.status = &st
					if r.status != nil {
						*r.status = st
					}
				}
			}
			return meta, nr
		}
		return meta, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, msg)
	}
	if out != nil {
		if err := json.Unmarshal(bz, out); err != nil {
			return meta, fmt.Errorf("%s %s: decode response: %w", method, path, err)
		}
	}
	return meta, nil
}

// statusPath is the route of the node's status.
const statusPath = "/v1/status"

// Status returns the node's status. A node that is not committing answers
// with an error (errors.Is(err, ErrNotReady)) and its status all the same.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	_, err := c.call(ctx, request{method: http.MethodGet, path: statusPath, status: &s}, &s)
	return s, err
}

// Services lists the services; opts may filter them (Status, Tags,
// Datacenter, Meta: a service is listed with the instances that match) and
// block.
func (c *Client) Services(ctx context.Context, opts *QueryOptions) ([]ServiceSummary, QueryMeta, error) {
	var s []ServiceSummary
	meta, err := c.read(ctx, http.MethodGet, "/v1/services"+opts.encode(), nil, &s)
	return s, meta, err
}

// Service returns the instances of a service that opts selects (Status,
// Tags, Datacenter, Meta, Near), optionally blocking; errors.Is(err,
// ErrNotFound) for unknown names.
func (c *Client) Service(ctx context.Context, name string, opts *QueryOptions) ([]Instance, QueryMeta, error) {
	var s []Instance
	meta, err := c.read(ctx, http.MethodGet, "/v1/services/"+url.PathEscape(name)+opts.encode(), nil, &s)
	return s, meta, err
}

// Alerts returns committed alerts, newest first: opts.Limit of them (100
// by default), filtered by Service, Kind and Status (the status moved to).
func (c *Client) Alerts(ctx context.Context, opts *QueryOptions) ([]Alert, QueryMeta, error) {
	var a []Alert
	meta, err := c.read(ctx, http.MethodGet, "/v1/alerts"+opts.encode(), nil, &a)
	return a, meta, err
}

// Encode renders the options as the query string of a read ("?status=passing",
// "" for none), for clients that build their own requests (package verify).
func (o *QueryOptions) Encode() string { return o.encode() }

// encode renders the options as a query string ("" for none).
func (o *QueryOptions) encode() string {
	if o == nil {
		return ""
	}
	v := url.Values{}
	if len(o.Status) > 0 {
		v.Set("status", strings.Join(o.Status, ","))
	}
	for _, t := range o.Tags {
		v.Add("tag", t)
	}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("dc", o.Datacenter)
	set("near", o.Near)
	set("service", o.Service)
	set("kind", o.Kind)
	for k, val := range o.Meta {
		v.Set("meta."+k, val)
	}
	if o.Limit > 0 {
		v.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.Pending {
		v.Set("pending", "true")
	}
	if o.WaitIndex > 0 {
		v.Set("index", strconv.FormatInt(o.WaitIndex, 10))
	}
	if o.WaitTime > 0 {
		v.Set("wait", o.WaitTime.String())
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// BroadcastTx submits a signed transaction and waits until it is committed
// or refused.
func (c *Client) BroadcastTx(ctx context.Context, tx []byte) (TxResult, error) {
	var r TxResult
	return r, c.do(ctx, http.MethodPost, "/v1/txs", tx, &r)
}

// Sign signs msg with key for the node's chain. The nonce is the clock in
// nanoseconds: strictly increasing per signer, gaps allowed.
func (c *Client) Sign(ctx context.Context, key ed25519.PrivateKey, msg types.Msg) ([]byte, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return nil, err
	}
	return types.SignTx(st.ChainID, key, uint64(time.Now().UnixNano()), msg)
}

func (c *Client) send(ctx context.Context, what string, key ed25519.PrivateKey, msg types.Msg) (TxResult, error) {
	tx, err := c.Sign(ctx, key, msg)
	if err != nil {
		return TxResult{}, fmt.Errorf("%s: %w", what, err)
	}
	res, err := c.sendSigned(ctx, tx)
	if err != nil {
		return res, fmt.Errorf("%s: %w", what, err)
	}
	if res.Code != 0 {
		// The log names the code and usually what was refused already.
		return res, fmt.Errorf("%s: refused: %s", what, strings.Replace(res.Log, what+": ", "", 1))
	}
	return res, nil
}

// sendSigned sends the signed tx and returns its outcome. Where the node
// may have taken tx without answering (it went away mid-request, or it
// could not commit it in time), the client asks by hash whether it was
// committed and, while c.wait lasts, sends the very same bytes again: the
// nonce inside makes the network execute them once at most, and a node
// that holds them already waits for their commit instead of taking them
// twice. A tx never goes out re-signed.
func (c *Client) sendSigned(ctx context.Context, tx []byte) (TxResult, error) {
	hash := types.TxHash(tx)
	deadline := time.Now().Add(c.wait)
	for sent := 1; ; sent++ {
		res, err := c.BroadcastTx(ctx, tx)
		switch {
		case err == nil && res.Code == ReplayCode && sent > 1:
			// Its own earlier copy was committed meanwhile: report that.
			if r, terr := c.Tx(ctx, hash); terr == nil {
				return r, nil
			}
			return res, nil
		case err == nil, isRefusal(err):
			return res, err
		}
		// The node went away (a crash, a restart) before it answered, or
		// took tx and did not commit it in time: it may be committed all
		// the same. Ask by hash until the node answers again or ctx ends.
		res, err = c.recheck(ctx, hash, err)
		var nc *notCommittedError
		if err == nil || !errors.As(err, &nc) || c.wait <= 0 || time.Now().After(deadline) {
			return res, err
		}
		if c.progress != nil {
			fmt.Fprintf(c.progress, "node at %s has not committed tx %s: sending the same signed transaction again (it executes at most once)\n", c.base, hash)
		}
	}
}

// ReplayCode is the result code of a transaction whose signer's nonce was
// used already (app.CodeReplay; the client does not import the app).
const ReplayCode = 3

// notCommittedError is recheck's answer that the node is back and has not
// committed the transaction.
type notCommittedError struct{ error }

func (e *notCommittedError) Unwrap() error { return e.error }

// isRefusal tells whether err is the node's answer (a 4xx), not a failure to
// get one.
func isRefusal(err error) bool {
	var se *statusError
	return errors.As(err, &se)
}

// recheck looks tx up by hash after sending it failed with cause, until it
// is found committed, the node says it is not (after a block), or ctx ends.
func (c *Client) recheck(ctx context.Context, hash string, cause error) (TxResult, error) {
	notFound := 0
	for {
		res, err := c.Tx(ctx, hash)
		switch {
		case err == nil:
			return res, nil
		case errors.Is(err, ErrNotFound):
			if notFound++; notFound >= 10 { // about two seconds of blocks after the node is back
				return TxResult{Hash: hash}, &notCommittedError{fmt.Errorf("%w; the node is back and has not committed tx %s: send it again", cause, hash)}
			}
		}
		select {
		case <-ctx.Done():
			return TxResult{Hash: hash}, fmt.Errorf("%w; tx %s may still be committed: ask with GET /v1/txs/%s", cause, hash, hash)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Tx looks up a committed transaction by hash (errors.Is(err, ErrNotFound)
// if no committed block holds it).
func (c *Client) Tx(ctx context.Context, hash string) (TxResult, error) {
	var r TxResult
	return r, c.do(ctx, http.MethodGet, "/v1/txs/"+hash, nil, &r)
}

// Register registers (or updates) a service instance, signed by key.
func (c *Client) Register(ctx context.Context, key ed25519.PrivateKey, inst types.ServiceInstance) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_Register{Register: &types.RegisterService{Instance: inst}}}
	return c.send(ctx, "register "+inst.Name+"/"+inst.Id, key, msg)
}

// Deregister removes a service instance, signed by key.
func (c *Client) Deregister(ctx context.Context, key ed25519.PrivateKey, name, id string) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_Deregister{Deregister: &types.DeregisterService{Name: name, Id: id}}}
	return c.send(ctx, "deregister "+name+"/"+id, key, msg)
}

// Observe submits a passive check result to the node, whose observer signs
// it into its next batch. The node takes it from a client on its own
// machine holding its observe token only (the node home's
// config/observe_token); errors.Is(err, ErrUnauthorized) for a missing or
// wrong token.
func (c *Client) Observe(ctx context.Context, token string, r PassiveResult) (ObserveAck, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return ObserveAck{}, err
	}
	var ack ObserveAck
	_, err = c.call(ctx, request{method: http.MethodPost, path: "/v1/observe", body: body, contentType: "application/json", token: token}, &ack)
	return ack, err
}

// Observers returns the observer set with each observer's standing;
// opts may filter by Datacenter and block.
func (c *Client) Observers(ctx context.Context, opts *QueryOptions) ([]Observer, QueryMeta, error) {
	var out []Observer
	meta, err := c.read(ctx, http.MethodGet, "/v1/observers"+opts.encode(), nil, &out)
	return out, meta, err
}

// Receivers lists the webhook receivers whose acknowledgement keys are
// registered; opts may block.
func (c *Client) Receivers(ctx context.Context, opts *QueryOptions) ([]Receiver, QueryMeta, error) {
	var out []Receiver
	meta, err := c.read(ctx, http.MethodGet, "/v1/receivers"+opts.encode(), nil, &out)
	return out, meta, err
}

// RegisterReceiver registers (or replaces) the ed25519 public key with
// which the webhook receiver name acknowledges deliveries, signed by the
// operator key; an empty pub removes it.
func (c *Client) RegisterReceiver(ctx context.Context, key ed25519.PrivateKey, name string, pub ed25519.PublicKey) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_RegisterReceiver{RegisterReceiver: &types.RegisterReceiver{Name: name, PubKey: pub}}}
	what := "register receiver " + name
	if len(pub) == 0 {
		what = "remove receiver " + name
	}
	return c.send(ctx, what, key, msg)
}

// AppHash returns the node's application hash after the block at height.
func (c *Client) AppHash(ctx context.Context, height int64) (AppHash, error) {
	var out AppHash
	err := c.do(ctx, http.MethodGet, "/v1/apphash/"+strconv.FormatInt(height, 10), nil, &out)
	return out, err
}

// statusError is the node's own message for a refused request, which says
// what went wrong; it matches its kind (ErrNotFound, ...) with errors.Is
// without repeating it ("not found: not found").
type statusError struct {
	msg  string
	kind error
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.kind }
