package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// Consul's key/value, txn and session routes. Reads answer from the agreed
// state like every other read (blocking, cached, ?proof=1). A write is a
// plain Consul request carrying a token that this node maps to an operator
// key it holds (Config.Tokens): the node signs the transaction with that
// key, broadcasts it, waits for its commit and answers as Consul does.
// The app decides, as for any signed transaction, whether the operator's
// scope covers the keys.

// Token maps a secret a client presents to an operator key this node holds.
type Token struct {
	// Secret is what the client sends (X-Consul-Token, ?token=, or
	// Authorization: Bearer).
	Secret string
	// Key signs the writes made with the token.
	Key ed25519.PrivateKey
	// Service and Instance are the instance a session created without
	// Node is bound to ("": such a session is refused).
	Service, Instance string
}

// HeaderRefusal carries the app's reason for a Consul write that answered
// false (a stale CAS names the current index; a held lock its holder).
const HeaderRefusal = "X-Bftmon-Refusal"

func (s *Server) kvRoutes(mux *http.ServeMux) {
	s.provableRoute(mux, "GET /v1/kv/{key...}", s.kvGet)
	mux.HandleFunc("PUT /v1/kv/{key...}", unprovable(s.kvPut))
	mux.HandleFunc("DELETE /v1/kv/{key...}", unprovable(s.kvDelete))
	mux.HandleFunc("PUT /v1/txn", unprovable(s.txn))
	mux.HandleFunc("POST /v1/txn", unprovable(s.txn))
	mux.HandleFunc("PUT /v1/session/create", unprovable(s.sessionCreate))
	mux.HandleFunc("PUT /v1/session/destroy/{id}", unprovable(s.sessionDestroy))
	mux.HandleFunc("PUT /v1/session/renew/{id}", unprovable(s.sessionRenew))
	s.provableRoute(mux, "GET /v1/session/info/{id}", s.sessionInfo)
	s.provableRoute(mux, "GET /v1/session/list", s.sessionList)
	s.provableRoute(mux, "GET /v1/session/node/{node}", s.sessionNode)
}

func kvTopic(prefix string) string { return "kv:" + prefix }

const topicSessions = "sessions"

// kvMissing is the answer for an absent key: 404 with an empty body, as
// Consul answers, and the index to block on for its creation.
type kvMissing struct{ index int64 }

func (e *kvMissing) Error() string { return "key not found" }

// rawValue is a ?raw answer: the value's bytes.
type rawValue struct {
	index int64
	value []byte
}

func (e *rawValue) Error() string { return "raw value" }

// KVPair converts a stored entry into Consul's JSON.
func KVPair(e *types.KVEntry) api.KVPair {
	return api.KVPair{Key: e.Key, CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex, LockIndex: e.LockIndex, Flags: e.Flags, Value: e.Value, Session: e.Session}
}

func (s *Server) kvGet(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	var recurse, keys, raw bool
	var sep string
	b, ok := parse(w, r, true, func(p *params) {
		recurse, keys, raw = p.flag("recurse"), p.flag("keys"), p.flag("raw")
		sep = p.str("separator")
	})
	if !ok {
		return
	}
	if err := app.ValidKVKey(key, recurse || keys); err != nil {
		writeErr(w, http.StatusBadRequest, "kv "+err.Error())
		return
	}
	topic := kvTopic(key)
	s.read(w, r, topic, b, func(q *app.Query) (int64, any, error) {
		kvIndex := max(q.Indexes().KV, 1)
		switch {
		case keys:
			list, err := q.KVKeys(key, sep)
			if err != nil {
				return 0, nil, err
			}
			if len(list) == 0 {
				return 0, nil, &kvMissing{kvIndex}
			}
			return kvIndex, list, nil
		case recurse:
			list, err := q.KVList(key)
			if err != nil {
				return 0, nil, err
			}
			if len(list) == 0 {
				return 0, nil, &kvMissing{kvIndex}
			}
			out := make([]api.KVPair, len(list))
			for i := range list {
				out[i] = KVPair(&list[i])
			}
			return kvIndex, out, nil
		}
		e, err := q.KVGet(key)
		if errors.Is(err, app.ErrNotFound) {
			return 0, nil, &kvMissing{kvIndex}
		}
		if err != nil {
			return 0, nil, err
		}
		if raw {
			return 0, nil, &rawValue{int64(e.ModifyIndex), e.Value}
		}
		return int64(e.ModifyIndex), []api.KVPair{KVPair(&e)}, nil
	}, consulIndex)
}

// tokenOf returns the token r carries, from X-Consul-Token, ?token= or
// Authorization: Bearer.
func tokenOf(r *http.Request) string {
	if t := r.Header.Get("X-Consul-Token"); t != "" {
		return t
	}
	if scheme, t, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(t)
	}
	return r.URL.Query().Get("token")
}

// writeHelp says how to write.
const writeHelp = "send a token this node maps to an operator key (X-Consul-Token: TOKEN, ?token=, or Authorization: Bearer TOKEN; the node's config/tokens.json), or sign the transaction with an operator key and POST it to /v1/txs ('bftmon kv put --key FILE' does)"

// signer finds the token r carries among the configured ones, comparing
// every configured secret in constant time (over their SHA-256, so that
// lengths do not leak either). It answers 403 and returns nil if none
// matches.
func (s *Server) signer(w http.ResponseWriter, r *http.Request) *Token {
	tok := tokenOf(r)
	if tok == "" {
		writeErr(w, http.StatusForbidden, fmt.Sprintf("%s %s: no token: %s", r.Method, r.URL.Path, writeHelp))
		return nil
	}
	h := sha256.Sum256([]byte(tok))
	var found *Token
	for i := range s.cfg.Tokens {
		c := sha256.Sum256([]byte(s.cfg.Tokens[i].Secret))
		if subtle.ConstantTimeCompare(h[:], c[:]) == 1 && found == nil {
			found = &s.cfg.Tokens[i]
		}
	}
	if found == nil {
		writeErr(w, http.StatusForbidden, fmt.Sprintf("%s %s: unknown token (this node maps no operator key to it): %s", r.Method, r.URL.Path, writeHelp))
	}
	return found
}

// chainID is the chain's id, read once.
func (s *Server) chainID(ctx context.Context) (string, error) {
	if v, ok := s.chain.Load().(string); ok && v != "" {
		return v, nil
	}
	st, err := s.b.Status(ctx)
	if err != nil {
		return "", err
	}
	s.chain.Store(st.ChainID)
	return st.ChainID, nil
}

// nonce is a fresh nonce: the clock in nanoseconds, strictly increasing
// in this process.
func (s *Server) nonce() uint64 {
	for {
		last := s.lastNonce.Load()
		n := max(uint64(time.Now().UnixNano()), last+1)
		if s.lastNonce.CompareAndSwap(last, n) {
			return n
		}
	}
}

// submit signs msg with tok's key, broadcasts it and waits for its commit.
// It answers 503 itself (ok false) if the node could not take it.
func (s *Server) submit(w http.ResponseWriter, r *http.Request, tok *Token, msg types.Msg) (tx []byte, res api.TxResult, ok bool) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	chain, err := s.chainID(ctx)
	if err == nil {
		tx, err = types.SignTx(chain, tok.Key, s.nonce(), msg)
	}
	if err == nil {
		res, err = s.b.BroadcastTx(ctx, tx)
	}
	if err != nil {
		if errors.Is(err, api.ErrNotReady) {
			w.Header().Set("Retry-After", "1")
		}
		writeErr(w, http.StatusServiceUnavailable, err.Error())
		return nil, res, false
	}
	if res.Height > 0 {
		w.Header().Set(HeaderCommitHeight, strconv.FormatInt(res.Height, 10))
		w.Header().Set(HeaderTx, res.Hash)
	}
	return tx, res, true
}

// HeaderCommitHeight is the height a Consul-style write committed at: a
// verifying proxy raises its floor to it, so that its next reads reflect
// the write.
const HeaderCommitHeight = "X-Bftmon-Commit-Height"

// refusalStatus is the HTTP status of a refused write (other than a failed
// condition, which answers false).
func refusalStatus(code uint32) int {
	switch app.Code(code) {
	case app.CodeUnauthorized:
		return http.StatusForbidden
	case app.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case app.CodeQuota:
		return http.StatusTooManyRequests
	case app.CodeBusy:
		return http.StatusServiceUnavailable
	case app.CodeInternal:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// answerBool answers a Consul write: true, false for a failed condition
// (with the reason and the key's current index in headers), or the refusal.
func (s *Server) answerBool(w http.ResponseWriter, key string, res api.TxResult) {
	switch {
	case res.Code == 0:
		writeJSON(w, http.StatusOK, true)
	case app.Code(res.Code) == app.CodeConflict:
		w.Header().Set(HeaderRefusal, res.Log)
		if q, err := s.b.Read(); err == nil {
			idx := q.Indexes().KV
			if e, err := q.KVGet(key); err == nil {
				idx = int64(e.ModifyIndex)
			}
			w.Header().Set("X-Consul-Index", strconv.FormatInt(idx, 10))
		}
		writeJSON(w, http.StatusOK, false)
	default:
		writeErr(w, refusalStatus(res.Code), res.Log)
	}
}

func (s *Server) kvPut(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	set, err := kvSetOf(key, r.URL, nil)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	tok := s.signer(w, r)
	if tok == nil {
		return
	}
	body, err := readBody(w, r, app.MaxKVValueBytes)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("kv put %q: value above %d bytes", key, app.MaxKVValueBytes))
		return
	case err != nil:
		writeErr(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	set.Value = body
	_, res, ok := s.submit(w, r, tok, types.Msg{Sum: &types.Msg_KvSet{KvSet: &set}})
	if ok {
		s.answerBool(w, key, res)
	}
}

// kvSetOf is the write PUT /v1/kv/KEY?QUERY asks for, with value as its
// value.
func kvSetOf(key string, u *url.URL, value []byte) (types.KVSet, error) {
	set := types.KVSet{Key: key, Value: value}
	p := newParams(u)
	if v := p.str("cas"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			p.fail("cas", v, "want the modify index of the entry (0: create only)")
		}
		set.Cas, set.CasIndex = true, n
	}
	if v := p.str("flags"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			p.fail("flags", v, "want an unsigned 64-bit number")
		}
		set.Flags = n
	}
	set.Acquire, set.Release = p.str("acquire"), p.str("release")
	if p.err != nil {
		return set, p.err
	}
	if err := app.ValidKVKey(key, false); err != nil {
		return set, fmt.Errorf("kv %w", err)
	}
	return set, nil
}

func (s *Server) kvDelete(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	del, err := kvDeleteOf(key, r.URL)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	tok := s.signer(w, r)
	if tok == nil {
		return
	}
	_, res, ok := s.submit(w, r, tok, types.Msg{Sum: &types.Msg_KvDelete{KvDelete: &del}})
	if ok {
		s.answerBool(w, key, res)
	}
}

// kvDeleteOf is the write DELETE /v1/kv/KEY?QUERY asks for.
func kvDeleteOf(key string, u *url.URL) (types.KVDelete, error) {
	del := types.KVDelete{Key: key}
	p := newParams(u)
	del.Recurse = p.flag("recurse")
	if v := p.str("cas"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			p.fail("cas", v, "want the modify index of the entry")
		}
		del.Cas, del.CasIndex = true, n
	}
	if p.err != nil {
		return del, p.err
	}
	if err := app.ValidKVKey(key, del.Recurse); err != nil {
		return del, fmt.Errorf("kv %w", err)
	}
	return del, nil
}

// txnOpsOf reads the operations of a txn body: Consul's JSON list.
func txnOpsOf(body io.Reader) ([]types.KVOp, error) {
	var in []api.TxnOp
	if err := json.NewDecoder(body).Decode(&in); err != nil {
		return nil, fmt.Errorf("txn body: want Consul's JSON list of operations [{\"KV\": {\"Verb\": ..., \"Key\": ...}}]: %w", err)
	}
	ops := make([]types.KVOp, len(in))
	for i, op := range in {
		if op.KV == nil {
			return nil, fmt.Errorf("txn op %d: only KV operations are served by bftmon", i)
		}
		ops[i] = types.KVOp{Verb: op.KV.Verb, Key: op.KV.Key, Value: op.KV.Value, Flags: op.KV.Flags, Index: op.KV.Index, Session: op.KV.Session}
	}
	return ops, nil
}

// opIndexRe finds the failed operation in a txn's refusal.
var opIndexRe = regexp.MustCompile(`kv txn op (\d+) `)

func txnErrors(log string) api.TxnResponse {
	i := 0
	if m := opIndexRe.FindStringSubmatch(log); m != nil {
		i, _ = strconv.Atoi(m[1])
	}
	return api.TxnResponse{Errors: []api.TxnError{{OpIndex: i, What: log}}}
}

func (s *Server) txn(w http.ResponseWriter, r *http.Request) {
	ops, err := txnOpsOf(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if app.ReadOnlyTxn(ops) {
		q, err := s.b.Read()
		if err != nil {
			s.fail(w, err)
			return
		}
		list, err := q.KVTxnRead(ops)
		if err != nil {
			if app.CodeOf(err) == app.CodeInternal {
				s.fail(w, err)
				return
			}
			writeJSON(w, http.StatusConflict, txnErrors(err.Error()))
			return
		}
		out := api.TxnResponse{Results: []api.TxnResult{}}
		for i := range list {
			kv := KVPair(&list[i])
			out.Results = append(out.Results, api.TxnResult{KV: &kv})
		}
		consulIndex(w.Header(), max(q.Indexes().KV, 1))
		writeJSON(w, http.StatusOK, out)
		return
	}
	tok := s.signer(w, r)
	if tok == nil {
		return
	}
	msg := types.Msg{Sum: &types.Msg_KvTxn{KvTxn: &types.KVTxn{Ops: ops}}}
	_, res, ok := s.submit(w, r, tok, msg)
	if !ok {
		return
	}
	switch st, _ := writeAnswer(&msg, res.Code); st {
	case http.StatusOK:
	case http.StatusConflict:
		writeJSON(w, st, txnErrors(res.Log))
		return
	default:
		writeErr(w, st, res.Log)
		return
	}
	// The results: what each operation left, read at the committing
	// height (the latest if that version is gone).
	var q *app.Query
	if pr, err := s.b.ReadAt(res.Height); err == nil {
		q, _ = app.NewQuery(pr)
	}
	if q == nil {
		var err error
		if q, err = s.b.Read(); err != nil {
			s.fail(w, err)
			return
		}
	}
	out := api.TxnResponse{Results: []api.TxnResult{}}
	for _, op := range ops {
		switch op.Verb {
		case app.VerbDelete, app.VerbDeleteTree, app.VerbDeleteCAS:
			continue
		case app.VerbGetTree:
			list, _ := q.KVList(op.Key)
			for i := range list {
				kv := KVPair(&list[i])
				out.Results = append(out.Results, api.TxnResult{KV: &kv})
			}
			continue
		}
		e, err := q.KVGet(op.Key)
		if err != nil {
			continue
		}
		kv := KVPair(&e)
		if op.Verb != app.VerbGet {
			kv.Value = nil
		}
		out.Results = append(out.Results, api.TxnResult{KV: &kv})
	}
	consulIndex(w.Header(), res.Height)
	writeJSON(w, http.StatusOK, out)
}

// SessionEntry converts a stored session into Consul's JSON.
func SessionEntry(se *types.Session) api.SessionEntry {
	out := api.SessionEntry{
		ID: se.Id, Name: se.Name, Node: se.Instance, Service: se.Service, CreateIndex: se.CreateIndex, ModifyIndex: se.CreateIndex,
		LockDelay: time.Duration(se.LockDelayMs) * time.Millisecond, Behavior: se.Behavior,
		NodeChecks: []string{}, ServiceChecks: []string{},
	}
	if se.TtlMs > 0 {
		out.TTL = (time.Duration(se.TtlMs) * time.Millisecond).String()
	}
	if se.ExpiresMs > 0 {
		out.ExpiresAt = time.UnixMilli(se.ExpiresMs).UTC()
	}
	return out
}

// sessionBody is PUT /v1/session/create's body: Consul's fields, of which
// Checks, NodeChecks and ServiceChecks are accepted and ignored (a
// session's health is its instance's agreed hard status). LockDelay is a
// duration string or a number (below 1000: seconds, else nanoseconds, as
// Consul reads it).
type sessionBody struct {
	Name          string
	Node          string
	Service       string
	TTL           string
	Behavior      string
	LockDelay     json.RawMessage
	Checks        []string
	NodeChecks    []string
	ServiceChecks []json.RawMessage
}

// parseDuration reads a Consul duration field: a string or a number.
func parseLockDelay(raw json.RawMessage) (time.Duration, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	var str string
	if json.Unmarshal(raw, &str) == nil {
		d, err := time.ParseDuration(str)
		return d, true, err
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, false, err
	}
	if n < 1000 {
		return time.Duration(n) * time.Second, true, nil
	}
	return time.Duration(n), true, nil
}

// instanceOf resolves a session's Node ("ID" or "SERVICE/ID") to a
// registered instance.
func (s *Server) instanceOf(node, service string) (string, string, error) {
	if svc, id, ok := strings.Cut(node, "/"); ok {
		return svc, id, nil
	}
	if service != "" {
		return service, node, nil
	}
	q, err := s.b.Read()
	if err != nil {
		return "", "", err
	}
	insts, err := q.Instances()
	if err != nil {
		return "", "", err
	}
	var found []string
	for i := range insts {
		if insts[i].Id == node {
			found = append(found, insts[i].Name)
		}
	}
	switch len(found) {
	case 0:
		return "", "", fmt.Errorf("session create: Node %q: no registered instance has that id (Node is an instance id, or SERVICE/ID)", node)
	case 1:
		return found[0], node, nil
	}
	return "", "", fmt.Errorf("session create: Node %q: instances of services %s have that id: say SERVICE/ID", node, strings.Join(found, ", "))
}

func (s *Server) sessionCreate(w http.ResponseWriter, r *http.Request) {
	in, m, err := sessionCreateOf(r.ContentLength, http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	tok := s.signer(w, r)
	if tok == nil {
		return
	}
	if in.Node == "" {
		if tok.Instance == "" {
			writeErr(w, http.StatusBadRequest, "session create: no Node (the instance id) given, and this node's token binds to no instance (its tokens.json entry's instance)")
			return
		}
		m.Service, m.Instance = tok.Service, tok.Instance
	} else {
		var err error
		if m.Service, m.Instance, err = s.instanceOf(in.Node, in.Service); err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	tx, res, ok := s.submit(w, r, tok, types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: &m}})
	if !ok {
		return
	}
	if res.Code != 0 {
		writeErr(w, refusalStatus(res.Code), res.Log)
		return
	}
	consulIndex(w.Header(), res.Height)
	writeJSON(w, http.StatusOK, struct{ ID string }{app.SessionID(tx)})
}

// sessionCreateOf reads PUT /v1/session/create's body (length bytes, -1:
// unknown) and returns it with the session it asks for, but for the
// instance, which the node resolves from Node or its token.
func sessionCreateOf(length int64, body io.Reader) (sessionBody, types.SessionCreate, error) {
	var in sessionBody
	if length != 0 {
		if err := json.NewDecoder(body).Decode(&in); err != nil && !errors.Is(err, io.EOF) {
			return in, types.SessionCreate{}, fmt.Errorf("session create body: want Consul's JSON {Name, Node, TTL, Behavior, LockDelay}: %w", err)
		}
	}
	m := types.SessionCreate{Name: in.Name, Behavior: in.Behavior}
	if in.TTL != "" {
		d, err := time.ParseDuration(in.TTL)
		if err != nil || d < 0 {
			return in, m, fmt.Errorf("session create: TTL %q: want a duration such as 15s", in.TTL)
		}
		m.TtlMs = d.Milliseconds()
	}
	d, set, err := parseLockDelay(in.LockDelay)
	if err != nil {
		return in, m, fmt.Errorf("session create: LockDelay %s: want a duration such as \"15s\"", in.LockDelay)
	}
	if set && d == 0 {
		m.NoLockDelay = true
	}
	m.LockDelayMs = d.Milliseconds()
	return in, m, nil
}

func (s *Server) sessionDestroy(w http.ResponseWriter, r *http.Request) {
	tok := s.signer(w, r)
	if tok == nil {
		return
	}
	msg := types.Msg{Sum: &types.Msg_SessionDestroy{SessionDestroy: &types.SessionDestroy{Id: r.PathValue("id")}}}
	_, res, ok := s.submit(w, r, tok, msg)
	if !ok {
		return
	}
	if st, _ := writeAnswer(&msg, res.Code); st != http.StatusOK {
		writeErr(w, st, res.Log)
		return
	}
	writeJSON(w, http.StatusOK, true)
}

func (s *Server) sessionRenew(w http.ResponseWriter, r *http.Request) {
	tok := s.signer(w, r)
	if tok == nil {
		return
	}
	id := r.PathValue("id")
	msg := types.Msg{Sum: &types.Msg_SessionRenew{SessionRenew: &types.SessionRenew{Id: id}}}
	_, res, ok := s.submit(w, r, tok, msg)
	if !ok {
		return
	}
	switch st, _ := writeAnswer(&msg, res.Code); st {
	case http.StatusOK:
	case http.StatusNotFound:
		consulText(w, st, fmt.Sprintf("Session id '%s' not found", id))
		return
	default:
		writeErr(w, st, res.Log)
		return
	}
	q, err := s.b.Read()
	if err != nil {
		s.fail(w, err)
		return
	}
	se, err := q.Session(id)
	if err != nil {
		consulText(w, http.StatusNotFound, fmt.Sprintf("Session id '%s' not found", id))
		return
	}
	consulIndex(w.Header(), res.Height)
	writeJSON(w, http.StatusOK, []api.SessionEntry{SessionEntry(&se)})
}

func (s *Server) sessionRead(w http.ResponseWriter, r *http.Request, list func(q *app.Query) ([]types.Session, error)) {
	b, ok := parse(w, r, true, func(*params) {})
	if !ok {
		return
	}
	s.read(w, r, topicSessions, b, func(q *app.Query) (int64, any, error) {
		ss, err := list(q)
		if err != nil {
			return 0, nil, err
		}
		out := make([]api.SessionEntry, 0, len(ss))
		for i := range ss {
			out = append(out, SessionEntry(&ss[i]))
		}
		return q.Indexes().Sessions, out, nil
	}, consulIndex)
}

func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.sessionRead(w, r, func(q *app.Query) ([]types.Session, error) {
		se, err := q.Session(id)
		if errors.Is(err, app.ErrNotFound) {
			return nil, nil
		}
		return []types.Session{se}, err
	})
}

func (s *Server) sessionList(w http.ResponseWriter, r *http.Request) {
	s.sessionRead(w, r, func(q *app.Query) ([]types.Session, error) { return q.Sessions() })
}

func (s *Server) sessionNode(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	s.sessionRead(w, r, func(q *app.Query) ([]types.Session, error) {
		all, err := q.Sessions()
		var out []types.Session
		for _, se := range all {
			if se.Instance == node || se.Service+"/"+se.Instance == node {
				out = append(out, se)
			}
		}
		return out, err
	})
}

// kvState holds the server's signing state.
type kvState struct {
	chain     atomic.Value  // string
	lastNonce atomic.Uint64 // the last nonce signed
}
