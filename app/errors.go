package app

import (
	"errors"
	"fmt"
)

// Code is the stable result code of a refused transaction. Codes never change
// meaning; new ones are only added.
type Code uint32

// Result codes of CheckTx and FinalizeBlock.
const (
	CodeOK           Code = 0
	CodeMalformed    Code = 1  // the bytes do not decode as an envelope
	CodeBadSignature Code = 2  // the signature does not verify
	CodeReplay       Code = 3  // nonce already used by the signer, or at or below its floor (app.NonceWindow)
	CodeUnauthorized Code = 4  // the signer may not send this message
	CodeInvalid      Code = 5  // the message's content is invalid
	CodeUnknownCheck Code = 6  // an observation names no registered check in the observer's scope
	CodeTooLarge     Code = 7  // tx or batch above its limit
	CodeNotFound     Code = 8  // deregistration of an instance that is not registered; an unknown or invalidated session; a txn's get of an absent key
	CodeBusy         Code = 9  // CheckTx only: the signer's share of this node's mempool is full
	CodeBadAck       Code = 10 // a receipt's receiver acknowledgement does not verify against the receiver's registered key
	CodeConflict     Code = 11 // a key/value condition failed: a stale cas index, a lock held by another session or in its lock-delay, a failed check of a txn
	CodeQuota        Code = 12 // the write would take the signing operator above a quota (genesis quotas): kv_bytes, kv_keys or instances
	CodeInternal     Code = 99 // a storage failure: the node must stop
)

var codeNames = map[Code]string{
	CodeOK: "ok", CodeMalformed: "malformed", CodeBadSignature: "bad_signature",
	CodeReplay: "replay", CodeUnauthorized: "unauthorized", CodeInvalid: "invalid",
	CodeUnknownCheck: "unknown_check", CodeTooLarge: "too_large", CodeNotFound: "not_found", CodeBusy: "busy",
	CodeBadAck: "bad_ack", CodeConflict: "conflict", CodeQuota: "quota",
	CodeInternal: "internal",
}

// String is the code's stable name (used as a metrics label).
func (c Code) String() string {
	if n, ok := codeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("code_%d", uint32(c))
}

// TxError is a refusal: a code and a message a person can act on.
type TxError struct {
	Code Code
	Msg  string
}

func (e *TxError) Error() string { return fmt.Sprintf("%s (code %d): %s", e.Code, e.Code, e.Msg) }

func refuse(code Code, format string, args ...any) error {
	return &TxError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err: CodeOK for nil, the TxError's code, or
// CodeInternal for any other error.
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	var te *TxError
	if errors.As(err, &te) {
		return te.Code
	}
	return CodeInternal
}
