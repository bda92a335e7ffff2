package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// What a verifying proxy checks of a Consul-style write this node signed
// and answered (CheckWrite): that the committed transaction is the write
// the request asked for, and that the node's answer is the one this
// server gives for the result the validators committed. The node says
// which transaction it was (HeaderTx) and where it committed
// (HeaderCommitHeight); the proxy proves both against verified headers.

// HeaderTx is the hash (upper-case hex SHA-256, as CometBFT names
// transactions) of the transaction a Consul-style write was signed into,
// set with HeaderCommitHeight on every write this node committed.
const HeaderTx = "X-Bftmon-Tx"

// SignedWrite tells whether method and path are a Consul-style write, which
// the node signs into a transaction with the key its token maps to: PUT or
// DELETE /v1/kv/..., PUT or POST /v1/txn, PUT /v1/session/create,
// /destroy/ID and /renew/ID.
func SignedWrite(method, path string) bool {
	switch {
	case strings.HasPrefix(path, "/v1/kv/"):
		return method == http.MethodPut || method == http.MethodDelete
	case path == "/v1/txn":
		return method == http.MethodPut || method == http.MethodPost
	case path == "/v1/session/create", strings.HasPrefix(path, "/v1/session/destroy/"), strings.HasPrefix(path, "/v1/session/renew/"):
		return method == http.MethodPut
	}
	return false
}

// CheckWrite checks a Consul-style write's committed transaction against
// the request and the node's answer: tx must carry the message this
// server builds from method, u and reqBody (for a session, the instance
// it is bound to is the node's to resolve, from Node or its token, and is
// not compared), and status and answer must be what this server answers
// for code, tx's committed result. A nil error means the answer is the
// committed outcome of this very request.
func CheckWrite(method string, u *url.URL, reqBody, tx []byte, code uint32, status int, answer []byte) error {
	body, _, err := types.DecodeUnverified(tx)
	if err != nil {
		return fmt.Errorf("the committed transaction does not decode: %w", err)
	}
	msg := body.Msg
	if err := sameWrite(method, u, reqBody, msg); err != nil {
		return fmt.Errorf("the committed transaction is not this request's write: %w", err)
	}
	want, wantBool := writeAnswer(msg, code)
	if status != want {
		return fmt.Errorf("the node answered HTTP %d; the committed result %s (code %d) is answered %d", status, app.Code(code), code, want)
	}
	if wantBool != nil {
		var got bool
		if err := json.Unmarshal(answer, &got); err != nil || got != *wantBool {
			return fmt.Errorf("the node answered %s; the committed result %s (code %d) is answered %t", firstLine(answer), app.Code(code), code, *wantBool)
		}
	}
	if sc := msg.GetSessionCreate(); sc != nil && code == 0 {
		var got struct{ ID string }
		if err := json.Unmarshal(answer, &got); err != nil || got.ID != app.SessionID(tx) {
			return fmt.Errorf("the node answered session %s; the committed transaction creates session %s", firstLine(answer), app.SessionID(tx))
		}
	}
	return nil
}

// sameWrite tells whether msg is the write the request asks for.
func sameWrite(method string, u *url.URL, reqBody []byte, msg *types.Msg) error {
	if msg == nil {
		return errors.New("it carries no message")
	}
	var want types.Msg
	path := u.Path
	switch {
	case strings.HasPrefix(path, "/v1/kv/") && method == http.MethodPut:
		set, err := kvSetOf(strings.TrimPrefix(path, "/v1/kv/"), u, reqBody)
		if err != nil {
			return err
		}
		want.Sum = &types.Msg_KvSet{KvSet: &set}
	case strings.HasPrefix(path, "/v1/kv/") && method == http.MethodDelete:
		del, err := kvDeleteOf(strings.TrimPrefix(path, "/v1/kv/"), u)
		if err != nil {
			return err
		}
		want.Sum = &types.Msg_KvDelete{KvDelete: &del}
	case path == "/v1/txn":
		ops, err := txnOpsOf(bytes.NewReader(reqBody))
		if err != nil {
			return err
		}
		want.Sum = &types.Msg_KvTxn{KvTxn: &types.KVTxn{Ops: ops}}
	case path == "/v1/session/create":
		in, sc, err := sessionCreateOf(int64(len(reqBody)), bytes.NewReader(reqBody))
		if err != nil {
			return err
		}
		got := msg.GetSessionCreate()
		if got == nil {
			return fmt.Errorf("want a session create, it carries %T", msg.Sum)
		}
		// The instance is the node's to resolve; what the request names
		// of it must hold.
		sc.Service, sc.Instance = got.Service, got.Instance
		if svc, id, ok := strings.Cut(in.Node, "/"); ok && (svc != got.Service || id != got.Instance) {
			return fmt.Errorf("the request binds the session to %s, the transaction to %s/%s", in.Node, got.Service, got.Instance)
		} else if !ok && in.Node != "" && (in.Node != got.Instance || in.Service != "" && in.Service != got.Service) {
			return fmt.Errorf("the request binds the session to instance %q, the transaction to %s/%s", in.Node, got.Service, got.Instance)
		}
		want.Sum = &types.Msg_SessionCreate{SessionCreate: &sc}
	case strings.HasPrefix(path, "/v1/session/destroy/"):
		want.Sum = &types.Msg_SessionDestroy{SessionDestroy: &types.SessionDestroy{Id: strings.TrimPrefix(path, "/v1/session/destroy/")}}
	case strings.HasPrefix(path, "/v1/session/renew/"):
		want.Sum = &types.Msg_SessionRenew{SessionRenew: &types.SessionRenew{Id: strings.TrimPrefix(path, "/v1/session/renew/")}}
	default:
		return fmt.Errorf("%s %s is not a write this server signs", method, path)
	}
	a, err := want.Marshal()
	if err != nil {
		return fmt.Errorf("encode the request's write: %w", err)
	}
	b, err := msg.Marshal()
	if err != nil {
		return fmt.Errorf("encode the committed write: %w", err)
	}
	if !bytes.Equal(a, b) {
		return fmt.Errorf("the request asks for %s, the transaction carries %s", want.String(), msg.String())
	}
	return nil
}

// writeAnswer is the HTTP status this server answers a committed write
// with for its result code, and the JSON boolean it answers with where it
// answers one (key/value puts and deletes, session destroys).
func writeAnswer(msg *types.Msg, code uint32) (int, *bool) {
	yes, no := true, false
	c := app.Code(code)
	switch msg.Sum.(type) {
	case *types.Msg_KvSet, *types.Msg_KvDelete:
		switch c {
		case app.CodeOK:
			return http.StatusOK, &yes
		case app.CodeConflict:
			return http.StatusOK, &no
		}
	case *types.Msg_KvTxn:
		switch c {
		case app.CodeOK:
			return http.StatusOK, nil
		case app.CodeConflict, app.CodeNotFound, app.CodeInvalid, app.CodeTooLarge:
			return http.StatusConflict, nil
		}
	case *types.Msg_SessionDestroy:
		if c == app.CodeOK || c == app.CodeNotFound {
			return http.StatusOK, &yes
		}
	case *types.Msg_SessionRenew:
		switch c {
		case app.CodeOK:
			return http.StatusOK, nil
		case app.CodeNotFound:
			return http.StatusNotFound, nil
		}
	default:
		if c == app.CodeOK {
			return http.StatusOK, nil
		}
	}
	return refusalStatus(code), nil
}

// firstLine is b's first line, cut short, for messages.
func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
