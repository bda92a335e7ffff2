package app_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// TestBadInputChangesNothing: every refusal has its stable code and leaves
// the working state untouched.
func TestBadInputChangesNothing(t *testing.T) {
	n := newNet(t)
	n.block(1000, n.tx("root", register(webInstance(0))))
	n.reportAll(1000, P, P, P, P)

	bigBatch := make([]types.Observation, app.MaxBatch+1)
	for i := range bigBatch {
		bigBatch[i] = obsOf(P)
	}
	bad := webInstance(0)
	bad.Checks[0].IntervalMs = 500
	relExec := webInstance(0)
	relExec.Checks[0] = types.Check{Id: "nag", Kind: "exec", Exec: &types.ExecParams{Argv: []string{"check_tcp"}}, IntervalMs: 1000, TimeoutMs: 1000, TtlMs: 3000}
	replayed := n.tx("o1", observe(obsOf(C)))
	n.block(1000, replayed)
	wrongChain, _ := types.SignTx("other-chain", key("o1"), 1<<40, observe(obsOf(C)))
	var flipped []byte
	{
		tx := n.tx("o2", observe(obsOf(C)))
		flipped = bytes.Clone(tx)
		flipped[len(flipped)-1] ^= 1
	}
	unknown := obsOf(C)
	unknown.Check = "nope"
	badStatus := obsOf(C)
	badStatus.Status = types.STATUS_DISPUTED

	cases := []struct {
		name string
		tx   []byte
		code app.Code
		msg  string
	}{
		{"malformed bytes", []byte("\xff\x00garbage"), app.CodeMalformed, "decode"},
		{"empty tx", nil, app.CodeMalformed, "signer key"},
		{"bad signature", flipped, app.CodeBadSignature, "signature"},
		{"other chain", wrongChain, app.CodeBadSignature, "signature"},
		{"replayed nonce", replayed, app.CodeReplay, "nonce"},
		{"observation from a non-observer", n.tx("root", observe(obsOf(C))), app.CodeUnauthorized, "not an observer"},
		{"unknown check", n.tx("o1", observe(unknown)), app.CodeUnknownCheck, "web/web-1/nope"},
		{"status that is not an observer status", n.tx("o1", observe(badStatus)), app.CodeInvalid, "status"},
		{"oversized batch", n.tx("o1", observe(bigBatch...)), app.CodeTooLarge, "split"},
		{"registration outside the operator's scope", n.tx("team", register(webInstance(0))), app.CodeUnauthorized, `"team-"*`},
		{"registration by a non-operator", n.tx("o1", register(webInstance(0))), app.CodeUnauthorized, "not an operator"},
		{"invalid registration", n.tx("root", register(bad)), app.CodeInvalid, "interval"},
		{"exec check with a relative plugin path", n.tx("root", register(relExec)), app.CodeInvalid, "absolute path"},
		{"deregistration of an unknown instance", n.tx("root", types.Msg{Sum: &types.Msg_Deregister{Deregister: &types.DeregisterService{Name: "web", Id: "nope"}}}), app.CodeNotFound, "web/nope"},
	}
	n.app.BeginBlock(n.height+1, n.now+1)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, cerr := n.app.CheckTx(tc.tx); tc.code != app.CodeInvalid && tc.code != app.CodeUnknownCheck && tc.code != app.CodeNotFound && app.CodeOf(cerr) != tc.code {
				t.Fatalf("CheckTx code = %v (%v), want %v", app.CodeOf(cerr), cerr, tc.code)
			}
			before := dump(t, n)
			_, err := n.app.DeliverTx(tc.tx)
			if got := app.CodeOf(err); got != tc.code {
				t.Fatalf("DeliverTx code = %v (%v), want %v", got, err, tc.code)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("message %q does not mention %q", err, tc.msg)
			}
			// Refused before its signature verified: nothing changes. Refused
			// after: only the signer's nonce is used up, so that the tx can
			// never execute later, and it is a replay from now on.
			changed := diff(before, dump(t, n))
			signed := tc.code != app.CodeMalformed && tc.code != app.CodeBadSignature && tc.code != app.CodeReplay
			switch {
			case !signed && len(changed) > 0:
				t.Fatalf("a tx refused before its signature verified changed %q", changed)
			case signed && (len(changed) != 1 || !strings.HasPrefix(changed[0], "n/")):
				t.Fatalf("a refused signed tx changed %q, want only its signer's nonce", changed)
			case signed:
				if _, err := n.app.DeliverTx(tc.tx); app.CodeOf(err) != app.CodeReplay {
					t.Fatalf("the refused tx again: %v, want a replay", err)
				}
			}
		})
	}
}

// dump reads every key of the working state.
func dump(t *testing.T, n *net) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := n.store.Iterate(nil, func(k, v []byte) bool {
		out[string(k)] = string(v)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// diff lists the keys whose values differ between two dumps, sorted.
func diff(a, b map[string]string) []string {
	var keys []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			keys = append(keys, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// onlyNonces tells whether the changed keys are signers' nonce records.
func onlyNonces(changed []string) bool {
	for _, k := range changed {
		if !strings.HasPrefix(k, "n/") {
			return false
		}
	}
	return true
}
