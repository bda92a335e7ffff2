package app_test

import (
	"flag"
	"fmt"
	"os"
	"slices"
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
//	          [VERB:SESSION[:KEY] ...]  and those key/value and session messages of the operator
//	                                  (new:S[:TTL] makes session S for web-1; acquire:S:KEY,
//	                                  release:S:KEY, renew:S, destroy:S)
//
// Each command prints one line: the height, the check's verdict and hard
// status, the alerts the block raised, and the holder of every key a
// message named (lock KEY=S, or KEY=free until DELAY after the block if it
// is in its lock-delay).
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
	sessions := map[string]string{} // scenario name → id
	names := map[string]string{}    // id → scenario name
	var lockKeys []string
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
				fmt.Fprintf(&out, "  refused %s: %v\n", line, codes[0])
				continue
			}
			alerts = al
		case "block":
			d, err := time.ParseDuration(strings.TrimPrefix(f[1], "+"))
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			var txs [][]byte
			for _, rep := range f[2:] {
				if strings.Contains(rep, ":") {
					txs = append(txs, scenarioMsg(t, n, rep, sessions, names, &lockKeys))
					continue
				}
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
		for _, k := range lockKeys {
			holder := "free"
			if e, ok := n.entry(k); ok && e.Session != "" {
				holder = names[e.Session]
			}
			fmt.Fprintf(&out, " lock %s=%s", k, holder)
			if d, _ := n.query().LockDelay(k); d > n.now {
				fmt.Fprintf(&out, " (delay %s)", time.Duration(d-n.now)*time.Millisecond)
			}
		}
		out.WriteString("\n")
	}
	return out.String()
}

// scenarioMsg signs the key/value or session message of a transcript's
// VERB:SESSION[:ARG] token.
func scenarioMsg(t *testing.T, n *net, tok string, sessions, names map[string]string, lockKeys *[]string) []byte {
	parts := strings.Split(tok, ":")
	if len(parts) < 2 {
		t.Fatalf("token %q: want VERB:SESSION[:ARG]", tok)
	}
	verb, s, arg := parts[0], parts[1], ""
	if len(parts) > 2 {
		arg = parts[2]
	}
	id := sessions[s]
	if id == "" && verb != "new" {
		id = "unknown-" + s
	}
	var msg types.Msg
	switch verb {
	case "new":
		m := &types.SessionCreate{Service: "web", Instance: "web-1"}
		if arg != "" {
			d, err := time.ParseDuration(arg)
			if err != nil {
				t.Fatalf("token %q: %v", tok, err)
			}
			m.TtlMs = d.Milliseconds()
		}
		tx := n.tx("root", types.Msg{Sum: &types.Msg_SessionCreate{SessionCreate: m}})
		sessions[s], names[app.SessionID(tx)] = app.SessionID(tx), s
		return tx
	case "acquire", "release":
		if !slices.Contains(*lockKeys, arg) {
			*lockKeys = append(*lockKeys, arg)
		}
		msg = kvAcquire(arg, s, id)
		if verb == "release" {
			msg = kvRelease(arg, id)
		}
	case "renew":
		msg = sessionRenew(id)
	case "destroy":
		msg = sessionDestroy(id)
	default:
		t.Fatalf("token %q: unknown verb %s", tok, verb)
	}
	return n.tx("root", msg)
}
