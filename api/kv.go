package api

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

// KVPair is a key/value entry in Consul's JSON (GET /v1/kv/KEY): its
// indexes are block heights. Value is base64 in the JSON.
type KVPair struct {
	Key         string
	CreateIndex uint64
	ModifyIndex uint64
	LockIndex   uint64
	Flags       uint64
	Value       []byte
	Session     string `json:",omitempty"`
}

// KVTxnOp is one KV operation of a transaction in Consul's JSON
// (PUT /v1/txn's [{"KV": {...}}]).
type KVTxnOp struct {
	Verb    string
	Key     string
	Value   []byte `json:",omitempty"`
	Flags   uint64 `json:",omitempty"`
	Index   uint64 `json:",omitempty"`
	Session string `json:",omitempty"`
}

// TxnOp is one operation of PUT /v1/txn: only KV operations are served.
type TxnOp struct {
	KV *KVTxnOp `json:",omitempty"`
}

// TxnResult is one result of a transaction that applied: the entry an
// operation read or wrote (a write's without its value, as Consul answers).
type TxnResult struct {
	KV *KVPair `json:",omitempty"`
}

// TxnError says which operation of a transaction failed, and why.
type TxnError struct {
	OpIndex int
	What    string
}

// TxnResponse is the answer of PUT /v1/txn: Results if it applied (200),
// Errors if it did not (409), and nothing of it was applied then.
type TxnResponse struct {
	Results []TxnResult
	Errors  []TxnError
}

// SessionEntry is a session in Consul's JSON (GET /v1/session/info/ID).
// Node is the instance id the session belongs to, Service its service
// (bftmon's); a session has no checks besides the instance's agreed hard
// status, which invalidates it when critical.
type SessionEntry struct {
	ID          string
	Name        string
	Node        string
	Service     string
	CreateIndex uint64
	ModifyIndex uint64
	// LockDelay is in nanoseconds, as Consul writes it.
	LockDelay time.Duration
	Behavior  string
	// TTL is a duration such as "15s" ("" for none).
	TTL string
	// ExpiresAt is the block time at which the TTL lapses unless renewed
	// (zero: no TTL).
	ExpiresAt     time.Time `json:",omitzero"`
	NodeChecks    []string
	ServiceChecks []string
}

// SessionRequest is the body of PUT /v1/session/create. Node names the
// instance ("ID", or "SERVICE/ID" where ids repeat across services); empty,
// the node binds the session to the instance its token is configured with.
// LockDelay and TTL are durations ("15s").
type SessionRequest struct {
	Name      string `json:",omitempty"`
	Node      string `json:",omitempty"`
	Service   string `json:",omitempty"`
	TTL       string `json:",omitempty"`
	Behavior  string `json:",omitempty"`
	LockDelay string `json:",omitempty"`
}

// ErrConflict matches the refusal of a write whose condition failed: a
// stale CAS index, a lock held by another session or in its lock-delay, a
// failed check of a txn.
var ErrConflict = errors.New("conflict")

// conflictCode is app.CodeConflict (the client does not import the app).
const conflictCode = 11

// KVOptions are a KV read's options: a blocking query, and Consul's
// ?recurse, ?keys and ?separator come from the method used.
type KVOptions struct {
	// WaitIndex makes the read block until the answer's index is above it,
	// or WaitTime has passed.
	WaitIndex int64
	WaitTime  time.Duration
}

func kvPath(key string) string { return "/v1/kv/" + (&url.URL{Path: key}).EscapedPath() }

func (o *KVOptions) values(v url.Values) string {
	if o != nil {
		if o.WaitIndex > 0 {
			v.Set("index", strconv.FormatInt(o.WaitIndex, 10))
		}
		if o.WaitTime > 0 {
			v.Set("wait", o.WaitTime.String())
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// KVGet reads one entry; nil (and no error) if the key is absent, with the
// index to block on for its creation.
func (c *Client) KVGet(ctx context.Context, key string, opts *KVOptions) (*KVPair, QueryMeta, error) {
	var out []KVPair
	meta, err := c.read(ctx, http.MethodGet, kvPath(key)+opts.values(url.Values{}), nil, &out)
	if errors.Is(err, ErrNotFound) {
		return nil, meta, nil
	}
	if err != nil || len(out) == 0 {
		return nil, meta, err
	}
	return &out[0], meta, nil
}

// KVList reads every entry whose key starts with prefix (?recurse).
func (c *Client) KVList(ctx context.Context, prefix string, opts *KVOptions) ([]KVPair, QueryMeta, error) {
	var out []KVPair
	meta, err := c.read(ctx, http.MethodGet, kvPath(prefix)+opts.values(url.Values{"recurse": {""}}), nil, &out)
	if errors.Is(err, ErrNotFound) {
		return nil, meta, nil
	}
	return out, meta, err
}

// KVKeys lists the keys that start with prefix (?keys), cut after the
// first separator past the prefix if separator is not empty.
func (c *Client) KVKeys(ctx context.Context, prefix, separator string, opts *KVOptions) ([]string, QueryMeta, error) {
	v := url.Values{"keys": {""}}
	if separator != "" {
		v.Set("separator", separator)
	}
	var out []string
	meta, err := c.read(ctx, http.MethodGet, kvPath(prefix)+opts.values(v), nil, &out)
	if errors.Is(err, ErrNotFound) {
		return nil, meta, nil
	}
	return out, meta, err
}

// KVPut writes an entry, signed by key: the height of its commit. A failed
// condition (CAS, acquire) is an error matching ErrConflict whose message
// says the current index or holder.
func (c *Client) KVPut(ctx context.Context, key ed25519.PrivateKey, set types.KVSet) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_KvSet{KvSet: &set}}
	return c.sendKV(ctx, "kv put "+strconv.Quote(set.Key), key, msg)
}

// KVCAS writes value to k only if its modify index is index (0: only if k
// is absent), signed by key.
func (c *Client) KVCAS(ctx context.Context, key ed25519.PrivateKey, k string, value []byte, flags, index uint64) (TxResult, error) {
	return c.KVPut(ctx, key, types.KVSet{Key: k, Value: value, Flags: flags, Cas: true, CasIndex: index})
}

// KVDelete deletes k, or with recurse every key that starts with it, signed
// by key.
func (c *Client) KVDelete(ctx context.Context, key ed25519.PrivateKey, del types.KVDelete) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_KvDelete{KvDelete: &del}}
	return c.sendKV(ctx, "kv delete "+strconv.Quote(del.Key), key, msg)
}

// KVTxn applies up to 64 operations atomically, signed by key: all of
// them or, if any fails (an error matching ErrConflict for a failed
// condition), none.
func (c *Client) KVTxn(ctx context.Context, key ed25519.PrivateKey, ops []types.KVOp) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_KvTxn{KvTxn: &types.KVTxn{Ops: ops}}}
	return c.sendKV(ctx, "kv txn", key, msg)
}

// sendKV sends a KV or session message and marks a failed condition.
func (c *Client) sendKV(ctx context.Context, what string, key ed25519.PrivateKey, msg types.Msg) (TxResult, error) {
	res, err := c.send(ctx, what, key, msg)
	if err != nil && res.Code == conflictCode {
		return res, fmt.Errorf("%w (%w)", err, ErrConflict)
	}
	return res, err
}

// SessionCreate opens a session for a registered instance, signed by key,
// and returns its id (app.SessionID of the transaction, known before it
// commits).
func (c *Client) SessionCreate(ctx context.Context, key ed25519.PrivateKey, m types.SessionCreate) (string, TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: &m}}
	what := "session create for " + m.Service + "/" + m.Instance
	tx, err := c.Sign(ctx, key, msg)
	if err != nil {
		return "", TxResult{}, fmt.Errorf("%s: %w", what, err)
	}
	res, err := c.sendSigned(ctx, tx)
	if err != nil {
		return "", res, fmt.Errorf("%s: %w", what, err)
	}
	if res.Code != 0 {
		return "", res, fmt.Errorf("%s: refused: %s", what, res.Log)
	}
	return SessionID(tx), res, nil
}

// SessionRenew resets a session's TTL, signed by key.
func (c *Client) SessionRenew(ctx context.Context, key ed25519.PrivateKey, id string) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_SessionRenew{SessionRenew: &types.SessionRenew{Id: id}}}
	return c.sendKV(ctx, "session renew "+id, key, msg)
}

// SessionDestroy invalidates a session, signed by key.
func (c *Client) SessionDestroy(ctx context.Context, key ed25519.PrivateKey, id string) (TxResult, error) {
	msg := types.Msg{Sum: &types.Msg_SessionDestroy{SessionDestroy: &types.SessionDestroy{Id: id}}}
	return c.sendKV(ctx, "session destroy "+id, key, msg)
}

// SessionInfo reads a live session; nil if it is unknown or invalidated.
func (c *Client) SessionInfo(ctx context.Context, id string, opts *KVOptions) (*SessionEntry, QueryMeta, error) {
	var out []SessionEntry
	meta, err := c.read(ctx, http.MethodGet, "/v1/session/info/"+url.PathEscape(id)+opts.values(url.Values{}), nil, &out)
	if err != nil || len(out) == 0 {
		return nil, meta, err
	}
	return &out[0], meta, nil
}

// Sessions lists the live sessions.
func (c *Client) Sessions(ctx context.Context, opts *KVOptions) ([]SessionEntry, QueryMeta, error) {
	var out []SessionEntry
	meta, err := c.read(ctx, http.MethodGet, "/v1/session/list"+opts.values(url.Values{}), nil, &out)
	return out, meta, err
}

// WithToken is a Consul-style write with a token the node maps to an
// operator key it holds (its config/tokens.json): the node signs.
type WithToken struct {
	c     *Client
	token string
}

// Token returns the token-carrying writer of c.
func (c *Client) Token(token string) *WithToken { return &WithToken{c: c, token: token} }

// put sends a Consul-style write and decodes its answer.
func (t *WithToken) put(ctx context.Context, method, path string, body []byte, out any) (QueryMeta, error) {
	return t.c.call(ctx, request{method: method, path: path, body: body, token: t.token}, out)
}

// KVPut writes value to key as Consul's PUT /v1/kv/KEY: false if a
// condition failed (query: cas, flags, acquire, release as in Consul).
func (t *WithToken) KVPut(ctx context.Context, key string, value []byte, query url.Values) (bool, QueryMeta, error) {
	var ok bool
	q := ""
	if len(query) > 0 {
		q = "?" + query.Encode()
	}
	meta, err := t.put(ctx, http.MethodPut, kvPath(key)+q, value, &ok)
	return ok, meta, err
}

// KVDelete deletes as Consul's DELETE /v1/kv/KEY (query: recurse, cas).
func (t *WithToken) KVDelete(ctx context.Context, key string, query url.Values) (bool, QueryMeta, error) {
	var ok bool
	q := ""
	if len(query) > 0 {
		q = "?" + query.Encode()
	}
	meta, err := t.put(ctx, http.MethodDelete, kvPath(key)+q, nil, &ok)
	return ok, meta, err
}

// Txn applies ops as Consul's PUT /v1/txn. A failed transaction is no
// error: its answer's Errors say why.
func (t *WithToken) Txn(ctx context.Context, ops []TxnOp) (TxnResponse, error) {
	body, err := json.Marshal(ops)
	if err != nil {
		return TxnResponse{}, fmt.Errorf("txn: %w", err)
	}
	var out TxnResponse
	_, err = t.put(ctx, http.MethodPut, "/v1/txn", body, &out)
	var se *statusError
	if errors.As(err, &se) && strings.HasPrefix(se.msg, "{") {
		if json.Unmarshal([]byte(se.msg), &out) == nil && len(out.Errors) > 0 {
			return out, nil
		}
	}
	return out, err
}

// SessionCreate opens a session as Consul's PUT /v1/session/create.
func (t *WithToken) SessionCreate(ctx context.Context, req SessionRequest) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("session create: %w", err)
	}
	var out struct{ ID string }
	_, err = t.put(ctx, http.MethodPut, "/v1/session/create", body, &out)
	return out.ID, err
}

// SessionDestroy invalidates a session as Consul's
// PUT /v1/session/destroy/ID.
func (t *WithToken) SessionDestroy(ctx context.Context, id string) error {
	var ok bool
	_, err := t.put(ctx, http.MethodPut, "/v1/session/destroy/"+url.PathEscape(id), nil, &ok)
	return err
}

// SessionID is the id of the session a signed SessionCreate transaction
// creates: the first 16 bytes of its SHA-256 in the UUID layout
// (app.SessionID, which the client does not import).
func SessionID(tx []byte) string {
	h := sha256.Sum256(tx)
	b := h[:16]
	b[6] = b[6]&0x0f | 0x80
	b[8] = b[8]&0x3f | 0x80
	x := fmt.Sprintf("%x", b)
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}
