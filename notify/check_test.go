package notify

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app/types"
)

// TestCheckBody: the honest native body passes and yields the committed
// alert's digest; a body whose JSON, record or digest was changed (what a
// faulty node forging a delivery under a real alert id would send) fails,
// saying what does not match.
func TestCheckBody(t *testing.T) {
	al := types.Alert{Id: "0123456789abcdef0123456789abcdef", Kind: "state_change", From: types.STATUS_PASSING, To: types.STATUS_CRITICAL,
		Service: "web", Instance: "web-1", Check: "http", Height: 7, TimeMs: 1700000000123,
		Views: []types.ObserverView{{Observer: "o1", Datacenter: "dc1", Status: types.STATUS_CRITICAL, Fresh: true, Output: "down"}}}
	p, err := newPayload(testChain, "pager", &al, map[string]string{"o1": "node0"})
	if err != nil {
		t.Fatal(err)
	}
	honest, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := types.AlertDigest(&al)
	forged := al
	forged.To = types.STATUS_PASSING
	forgedRecord, _ := forged.Marshal()
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(honest, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	for _, tc := range []struct {
		name string
		body []byte
		err  string
	}{
		{"the honest body", honest, ""},
		{"a forged status", edit(func(m map[string]any) { m["to"] = "passing" }), "differs from its record"},
		{"a forged output", edit(func(m map[string]any) { m["views"].([]any)[0].(map[string]any)["output"] = "ok" }), "differs from its record"},
		{"a forged record, the old digest", edit(func(m map[string]any) { m["record"] = base64.StdEncoding.EncodeToString(forgedRecord) }), "not the SHA-256 of its record"},
		{"a forged record and body, their digest", edit(func(m map[string]any) {
			m["record"] = base64.StdEncoding.EncodeToString(forgedRecord)
			m["digest"] = hex.EncodeToString(types.DigestOf(forgedRecord))
		}), "differs from its record"},
		{"a non-canonical record", edit(func(m map[string]any) {
			r := append(append([]byte{}, p.Record...), 0x60, 0x00) // field 12, varint 0: decodes, re-encodes shorter
			m["record"] = base64.StdEncoding.EncodeToString(r)
			m["digest"] = hex.EncodeToString(types.DigestOf(r))
		}), "canonical"},
		{"no record", edit(func(m map[string]any) { delete(m, "record") }), `no "record"`},
		{"not JSON", []byte("<html>"), "not a native delivery"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, digest, err := CheckBody(tc.body)
			if tc.err == "" {
				if err != nil || got.Id != al.Id || hex.EncodeToString(digest) != hex.EncodeToString(want) {
					t.Fatalf("honest body: %v, id %s, digest %x; want the committed digest %x", err, got.Id, digest, want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
		})
	}
}
