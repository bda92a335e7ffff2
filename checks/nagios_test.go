package checks

import (
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func TestNagiosLine(t *testing.T) {
	cases := []struct {
		name string
		r    Result
		want string
	}{
		{"probe latency as time", Result{Status: types.STATUS_PASSING, Output: "HTTP 200 OK", Latency: 1500 * time.Microsecond},
			"OK - HTTP 200 OK | time=0.0015s;;;0"},
		{"plugin perfdata kept", Result{Status: types.STATUS_WARNING, Output: "DISK WARNING", Perf: []Perf{
			{Label: "/ used", Value: 91.5, Known: true, UOM: "%", Warn: "90", Crit: "95", Min: "0", Max: "100"},
			{Label: "inodes", Known: false},
		}}, "WARNING - DISK WARNING | '/ used'=91.5%;90;95;0;100 inodes=U"},
		{"critical", Result{Status: types.STATUS_CRITICAL, Output: "connection refused"}, "CRITICAL - connection refused | time=0s;;;0"},
		{"unknown", Result{Status: types.STATUS_UNKNOWN, Output: "plugin printed nothing"}, "UNKNOWN - plugin printed nothing | time=0s;;;0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := NagiosLine(tc.r); got != tc.want {
				t.Fatalf("NagiosLine = %q, want %q", got, tc.want)
			}
		})
	}
	// What NagiosLine writes, ParsePluginOutput reads back.
	line := NagiosLine(cases[1].r)
	po := ParsePluginOutput(line)
	if len(po.Perf) != 2 || po.Perf[0].Label != "/ used" || po.Perf[0].Value != 91.5 || po.Perf[0].Crit != "95" || po.Perf[1].Known {
		t.Fatalf("round trip of %q: %+v", line, po.Perf)
	}
}
