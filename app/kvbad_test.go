package app_test

import (
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// TestKVBadInputChangesNothing: every refusal of a key/value or session
// message has its stable code, names what is wrong (a stale cas the
// current index), and changes nothing but the signer's nonce.
func TestKVBadInputChangesNothing(t *testing.T) {
	n := newNet(t)
	twoInstances(n, 0)
	s1 := n.newSession(1000, &types.SessionCreate{Service: "web", Instance: "web-1"})
	s2 := n.newSession(1000, &types.SessionCreate{Service: "web", Instance: "web-2"})
	s3 := n.newSession(1000, &types.SessionCreate{Service: "web", Instance: "web-2"})
	n.must(1000, "root", kvAcquire("lead", "web-1", s1), kvAcquire("gone", "", s3), kvSet("cfg", "v"))
	cfgIndex := itoa(uint64(n.height))
	n.must(1000, "root", sessionDestroy(s3)) // "gone" is in its lock-delay

	bigOps := make([]types.KVOp, app.MaxTxnOps+1)
	for i := range bigOps {
		bigOps[i] = types.KVOp{Verb: "set", Key: "k"}
	}
	create := func(m *types.SessionCreate) types.Msg {
		return types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: m}}
	}
	cases := []struct {
		name   string
		signer string
		msg    types.Msg
		code   app.Code
		msg2   string
		static bool // CheckTx refuses it too
	}{
		{"empty key", "root", kvSet("", "v"), app.CodeInvalid, "key is empty", true},
		{"key over 512 bytes", "root", kvSet(strings.Repeat("k", app.MaxKVKeyBytes+1), "v"), app.CodeInvalid, "at most 512", true},
		{"key not UTF-8", "root", kvSet("k\xff", "v"), app.CodeInvalid, "UTF-8", true},
		{"value over 512 KiB", "root", kvSet("k", strings.Repeat("v", app.MaxKVValueBytes+1)), app.CodeTooLarge, "at most 524288", true},
		{"write outside the operator's scope", "team", kvSet("web/x", "v"), app.CodeUnauthorized, `"team-"*`, true},
		{"services/NAME/ of another's service", "team", kvSet("services/web/x", "v"), app.CodeUnauthorized, "services/NAME/", true},
		{"write by an observer", "o1", kvSet("k", "v"), app.CodeUnauthorized, "not an operator", true},
		{"cas on a stale index", "root", kvCAS("cfg", "w", 1), app.CodeConflict, "current modify index is " + cfgIndex, false},
		{"cas 0 on an existing key", "root", kvCAS("cfg", "w", 0), app.CodeConflict, "modify index " + cfgIndex, false},
		{"cas on an absent key", "root", kvCAS("nope", "w", 3), app.CodeConflict, "does not exist", false},
		{"delete-cas on a stale index", "root", kvDeleteCAS("cfg", 1), app.CodeConflict, "current modify index is " + cfgIndex, false},
		{"acquire with an unknown session", "root", kvAcquire("k", "", "no-such-session"), app.CodeNotFound, "unknown or was invalidated", false},
		{"acquire with an invalidated session", "root", kvAcquire("k", "", s3), app.CodeNotFound, s3, false},
		{"acquire of a key another session holds", "root", kvAcquire("lead", "web-2", s2), app.CodeConflict, "held by session " + s1, false},
		{"acquire during the lock-delay", "root", kvAcquire("gone", "", s2), app.CodeConflict, "lock-delay", false},
		{"release by a session that does not hold it", "root", kvRelease("lead", s2), app.CodeConflict, "held by session " + s1, false},
		{"acquire and release at once", "root", types.Msg{Sum: &types.Msg_KvSet{KvSet: &types.KVSet{Key: "k", Acquire: s1, Release: s1}}}, app.CodeInvalid, "at once", true},
		{"delete recurse with cas", "root", types.Msg{Sum: &types.Msg_KvDelete{KvDelete: &types.KVDelete{Key: "k", Recurse: true, Cas: true}}}, app.CodeInvalid, "cas with recurse", true},
		{"txn of 65 operations", "root", kvTxn(bigOps...), app.CodeTooLarge, "at most 64", true},
		{"empty txn", "root", kvTxn(), app.CodeInvalid, "without operations", true},
		{"txn with an unknown verb", "root", kvTxn(types.KVOp{Verb: "frob", Key: "k"}), app.CodeInvalid, `unknown verb "frob"`, true},
		{"txn lock without a session", "root", kvTxn(types.KVOp{Verb: "lock", Key: "k"}), app.CodeInvalid, "no session", true},
		{"txn whose third op fails", "root", kvTxn(types.KVOp{Verb: "set", Key: "a", Value: []byte("1")}, types.KVOp{Verb: "delete", Key: "cfg"},
			types.KVOp{Verb: "check-index", Key: "cfg", Index: 1}), app.CodeConflict, "op 2 (check-index", false},
		{"txn get of an absent key", "root", kvTxn(types.KVOp{Verb: "set", Key: "a"}, types.KVOp{Verb: "get", Key: "nope"}), app.CodeNotFound, "does not exist", false},
		{"txn check-session of another holder", "root", kvTxn(types.KVOp{Verb: "check-session", Key: "lead", Session: s2}), app.CodeConflict, "held by session " + s1, false},
		{"session for an unknown instance", "root", sessionCreate("web", "web-9", 0), app.CodeNotFound, "web/web-9", false},
		{"session ttl below 10 s", "root", sessionCreate("web", "web-1", 5000), app.CodeInvalid, "ttl 5000", true},
		{"session with an unknown behaviour", "root", create(&types.SessionCreate{Service: "web", Instance: "web-1", Behavior: "explode"}), app.CodeInvalid, "behavior", true},
		{"session lock-delay over 60 s", "root", create(&types.SessionCreate{Service: "web", Instance: "web-1", LockDelayMs: 61_000}), app.CodeInvalid, "lock-delay", true},
		{"session outside the operator's scope", "team", sessionCreate("web", "web-1", 0), app.CodeUnauthorized, `"team-"*`, true},
		{"renew of an unknown session", "root", sessionRenew("nope"), app.CodeNotFound, "unknown", false},
		{"renew of an invalidated session", "root", sessionRenew(s3), app.CodeNotFound, "invalidated", false},
		{"destroy outside the operator's scope", "team", sessionDestroy(s1), app.CodeUnauthorized, `"team-"*`, false},
		{"session message by an observer", "o1", sessionDestroy(s1), app.CodeUnauthorized, "not an operator", true},
	}
	n.app.BeginBlock(n.height+1, n.now+1)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tx := n.tx(tc.signer, tc.msg)
			_, cerr := n.app.CheckTx(tx)
			if tc.static && app.CodeOf(cerr) != tc.code || !tc.static && cerr != nil {
				t.Fatalf("CheckTx: %v, want code %v: %v", cerr, tc.code, tc.static)
			}
			before := dump(t, n)
			_, err := n.app.DeliverTx(tx)
			if got := app.CodeOf(err); got != tc.code {
				t.Fatalf("DeliverTx code = %v (%v), want %v", got, err, tc.code)
			}
			if !strings.Contains(err.Error(), tc.msg2) {
				t.Fatalf("message %q does not mention %q", err, tc.msg2)
			}
			if changed := diff(before, dump(t, n)); len(changed) != 1 || !strings.HasPrefix(changed[0], "n/") {
				t.Fatalf("a refused tx changed %q, want only its signer's nonce", changed)
			}
		})
	}
}
