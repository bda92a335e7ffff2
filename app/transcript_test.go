package app_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

var update = flag.Bool("update", false, "rewrite the expected output of testdata/*.txt")

// TestTranscripts runs the scenarios of testdata/scenarios.txt: commands
// above "----", the expected output below it, one scenario per paragraph.
//
//	register [confirm=DUR] [dc=DC]   registers web/web-1 in a block of its own
//	block +DUR [oN=STATUS ...]        a block DUR after the last, with those observers' reports
//
// Each command prints one line: the height, the check's verdict and hard
// status, and the alerts the block raised.
func TestTranscripts(t *testing.T) {
	const path = "testdata/scenarios.txt"
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for i, para := range strings.Split(strings.TrimSpace(string(raw)), "\n\n") {
		cmds, want, ok := strings.Cut(para+"\n", "\n----\n")
		if !ok {
			t.Fatalf("scenario %d has no ----", i+1)
		}
		got := runScenario(t, cmds)
		if !*update && strings.TrimSpace(want) != strings.TrimSpace(got) {
			t.Errorf("scenario %d:\n%s\n---- got:\n%s\n---- want:\n%s", i+1, cmds, got, want)
		}
		if i > 0 {
			out.WriteString("\n")
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n", cmds, strings.TrimSpace(got))
	}
	if *update {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func runScenario(t *testing.T, cmds string) string {
	n := newNet(t)
	var out strings.Builder
	for _, line := range strings.Split(cmds, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		var alerts []types.Alert
		switch f[0] {
		case "register":
			si := webInstance(0)
			for _, arg := range f[1:] {
				k, v, _ := strings.Cut(arg, "=")
				switch k {
				case "confirm":
					d, err := time.ParseDuration(v)
					if err != nil {
						t.Fatalf("%q: %v", line, err)
					}
					si.Checks[0].ConfirmMs = d.Milliseconds()
				case "dc":
					si.Checks[0].Datacenters = strings.Split(v, ",")
				default:
					t.Fatalf("%q: unknown argument %s", line, k)
				}
			}
			codes, al := n.block(1000, n.tx("root", register(si)))
			if codes[0] != app.CodeOK {
				t.Fatalf("%q refused: %v", line, codes[0])
			}
			alerts = al
		case "block":
			d, err := time.ParseDuration(strings.TrimPrefix(f[1], "+"))
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			var txs [][]byte
			for _, rep := range f[2:] {
				who, st, _ := strings.Cut(rep, "=")
				status, err := types.ParseStatus(st)
				if err != nil {
					t.Fatalf("%q: %v", line, err)
				}
				txs = append(txs, n.tx(who, observe(obsOf(status))))
			}
			var codes []app.Code
			codes, alerts = n.block(d.Milliseconds(), txs...)
			for i, c := range codes {
				if c != app.CodeOK {
					fmt.Fprintf(&out, "  refused %s: %v\n", f[2+i], c)
				}
			}
		default:
			t.Fatalf("unknown command %q", line)
		}
		cv := n.check()
		fmt.Fprintf(&out, "h%d verdict=%s hard=%s", n.height, cv.State.Verdict.Name(), cv.State.Hard.Name())
		for _, a := range alerts {
			fmt.Fprintf(&out, " alert=%s:%s→%s", a.Kind, a.From.Name(), a.To.Name())
		}
		out.WriteString("\n")
	}
	return out.String()
}
