package checks

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/bftmon/bftmon/app/types"
)

func TestKinds(t *testing.T) {
	if got, want := strings.Join(Kinds(), ","), "dns,exec,grpc,http,https,passive,tcp"; got != want {
		t.Fatalf("Kinds() = %s, want %s", got, want)
	}
}

func TestNewRefuses(t *testing.T) {
	cases := []struct {
		name  string
		check types.Check
		err   string
	}{
		{"unknown kind", types.Check{Id: "x", Kind: "smoke-signal"}, `check x: unknown kind "smoke-signal" (known: dns, exec, grpc, http, https, passive, tcp)`},
		{"http without params", types.Check{Id: "x", Kind: "http"}, "no http parameters"},
		{"http with a relative url", types.Check{Id: "x", Kind: "http", Http: &types.HTTPParams{Url: "/health"}}, "not an absolute http(s) URL"},
		{"http with another scheme", types.Check{Id: "x", Kind: "http", Http: &types.HTTPParams{Url: "ftp://example.com/"}}, "not an absolute http(s) URL"},
		{"http with a bad method", types.Check{Id: "x", Kind: "http", Http: &types.HTTPParams{Url: "http://example.com/", Method: "GE T"}}, "invalid method"},
		{"tcp without address", types.Check{Id: "x", Kind: "tcp"}, "tcp: no address"},
		{"tcp without port", types.Check{Id: "x", Kind: "tcp", Tcp: &types.TCPParams{Address: "example.com"}}, "missing port"},
		{"passive", types.Check{Id: "x", Kind: "passive", TtlMs: 60_000}, "check x: passive check: results are submitted with `bftmon submit` or POST /v1/observe, not probed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.check)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("New: err = %v, want one containing %q", err, tc.err)
			}
			r := RunOnce(context.Background(), tc.check)
			if r.Status != types.STATUS_UNKNOWN || r.Output != err.Error() {
				t.Fatalf("RunOnce = %s %q, want unknown %q", r.Status.Name(), r.Output, err)
			}
		})
	}
}

func TestClip(t *testing.T) {
	long := strings.Repeat("é", MaxOutput) // 2 bytes per rune
	cases := []struct {
		name, in, want string
	}{
		{"short", "HTTP 200 OK", "HTTP 200 OK"},
		{"one line", "first\nsecond\r\n  third\t", "first second third"},
		{"invalid utf-8", "bad \xff byte", "bad \uFFFD byte"},
		{"long", long, long[:MaxOutput-4] + "…"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := clip(tc.in)
			if got != tc.want {
				t.Fatalf("clip = %q, want %q", got, tc.want)
			}
			if len(got) > MaxOutput || !utf8.ValidString(got) {
				t.Fatalf("clip = %q: %d bytes, valid UTF-8 %v", got, len(got), utf8.ValidString(got))
			}
		})
	}
}
