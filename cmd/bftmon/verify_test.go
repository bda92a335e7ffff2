package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/testutil"
	"github.com/bftmon/bftmon/node"
	"github.com/bftmon/bftmon/notify"
)

// forgingRPC is a CometBFT RPC in front of upstream whose /commit answers
// carry forged signatures.
func forgingRPC(t *testing.T, upstream string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		resp, err := http.Post(upstream, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if bytes.Contains(body, []byte(`"method":"commit"`)) {
			var m map[string]any
			if json.Unmarshal(out, &m) == nil {
				res, _ := m["result"].(map[string]any)
				sh, _ := res["signed_header"].(map[string]any)
				commit, _ := sh["commit"].(map[string]any)
				sigs, _ := commit["signatures"].([]any)
				for _, s := range sigs {
					sig, _ := s.(map[string]any)
					if b, err := base64.StdEncoding.DecodeString(fmt.Sprint(sig["signature"])); err == nil && len(b) > 0 {
						b[0] ^= 1
						sig["signature"] = base64.StdEncoding.EncodeToString(b)
					}
				}
				out, _ = json.Marshal(m)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestVerifyCLI runs the read commands with --verify through the real
// binary against a real one-node network: honest answers say "verified at
// height H"; a wrong trusted hash or forged header signatures make health
// exit 3 (UNKNOWN) with the reason; config/client.json turns verification
// on and a bad key in it is named with its line; bftmon proxy serves
// verified answers.
func TestVerifyCLI(t *testing.T) {
	bin := buildBinary(t)
	home := filepath.Join(t.TempDir(), "home")
	httpAddr, rpcAddr, p2pAddr, demoAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	// The network is made first, as bftmon dev would, with a native
	// receiver that keeps every delivery it gets: dev resumes it.
	hook := newHookRecorder(t)
	if err := node.Init(node.InitOptions{Home: home, HTTPAddr: httpAddr, RPCAddr: "tcp://" + rpcAddr, P2PAddr: "tcp://" + p2pAddr}); err != nil {
		t.Fatal(err)
	}
	st, err := node.ReadSettings(home)
	if err != nil {
		t.Fatal(err)
	}
	st.Notify = notify.Settings{RetryBase: "100ms", RetryMax: "300ms", Receivers: []notify.ReceiverSettings{
		{Name: "hook", URL: hook.srv.URL, Secret: hookSecret, Kinds: []string{"state_change"}},
	}}
	if err := node.WriteSettings(home, st); err != nil {
		t.Fatal(err)
	}
	d := startDev(t, bin, "--home", home, "--http", httpAddr, "--demo-addr", demoAddr,
		"--rpc", "tcp://"+rpcAddr, "--p2p", "tcp://"+p2pAddr, "--dns", "")
	d.waitLine(t, "demo is passing", 90*time.Second)
	cli := cliRunner(t, bin, home, httpAddr)
	// A proven answer is of the height before the latest (whose app hash
	// the latest header carries): wait until that one is passing too.
	testutil.WaitFor(t, "demo verified passing", 30*time.Second, func() (bool, error) {
		out, code := cli("health", "demo", "--verify")
		return code == 0, fmt.Errorf("exit %d: %s", code, out)
	})

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"health", "demo", "--verify"}, []string{"demo-1", "passing", "verified at height "}},
		{[]string{"services", "--verify"}, []string{"demo", "verified at height "}},
		{[]string{"service", "list", "--verify", "--status", "passing"}, []string{"demo", "verified at height "}},
		{[]string{"service", "show", "demo", "--verify"}, []string{"demo/demo-1", "verified at height "}},
		{[]string{"observers", "--verify"}, []string{"node0", "verified at height "}},
		{[]string{"alerts", "--verify"}, []string{"HEIGHT", "verified at height "}},
		{[]string{"health", "demo", "--verify", "--rpc", "http://" + rpcAddr, "--genesis", filepath.Join(home, "config", "genesis.json")}, []string{"verified at height "}},
	} {
		out, code := cli(tc.args...)
		if code != 0 {
			t.Errorf("%v: exit %d:\n%s", tc.args, code, out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: %q not in\n%s", tc.args, w, out)
			}
		}
	}
	out, code := cli("health", "demo", "--verify", "-o", "json")
	var insts []api.Instance
	if i := strings.Index(out, "verified at height"); code != 0 || i < 0 || json.Unmarshal([]byte(out[:i]), &insts) != nil || len(insts) != 1 {
		t.Errorf("health demo --verify -o json: exit %d:\n%s", code, out)
	}

	// What cannot be verified: Nagios UNKNOWN, the reason on stderr.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--trust-height", "2", "--trust-hash", strings.Repeat("AB", 32)}, "hash"},
		{[]string{"--rpc", forgingRPC(t, "http://"+rpcAddr)}, "signatures"},
		{[]string{"--max-age", "1ns"}, "stale"},
		{[]string{"--genesis", filepath.Join(t.TempDir(), "none.json")}, "none.json"},
	} {
		args := append([]string{"health", "demo", "--verify"}, tc.args...)
		out, code := cli(args...)
		if code != 3 || !strings.Contains(out, "UNKNOWN - cannot verify demo") || !strings.Contains(out, tc.want) || strings.Contains(out, "verified at") {
			t.Errorf("%v: exit %d, want 3 with UNKNOWN and %q:\n%s", args, code, tc.want, out)
		}
	}

	// config/client.json: defaults, and a typo named with its line.
	cfgFile := filepath.Join(home, "config", "client.json")
	if err := os.WriteFile(cfgFile, []byte("{\n  \"verify\": true,\n  \"max_age\": \"20s\"\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := cli("health", "demo"); code != 0 || !strings.Contains(out, "verified at height ") {
		t.Errorf("health demo with verify in client.json: exit %d:\n%s", code, out)
	}
	if out, code := cli("health", "demo", "--verify=false"); code != 0 || strings.Contains(out, "verified") {
		t.Errorf("health demo --verify=false: exit %d:\n%s", code, out)
	}
	os.WriteFile(cfgFile, []byte("{\n  \"verify\": true,\n  \"trust_perod\": \"1h\"\n}\n"), 0o600)
	if out, code := cli("services"); code == 0 || !strings.Contains(out, "client.json:3") || !strings.Contains(out, "trust_perod") {
		t.Errorf("client.json with a typo: exit %d:\n%s", code, out)
	}
	os.WriteFile(cfgFile, []byte("{\n  \"max_age\": \"soon\"\n}\n"), 0o600)
	if out, code := cli("services", "--verify"); code == 0 || !strings.Contains(out, "client.json:2: max_age") {
		t.Errorf("client.json with a bad duration: exit %d:\n%s", code, out)
	}
	os.Remove(cfgFile)

	// bftmon proxy: verified answers, with the height.
	listen := testutil.FreeAddr(t)
	proxy := exec.Command(bin, "proxy", "--listen", listen, "--addr", httpAddr)
	proxy.Env = append(os.Environ(), "BFTMON_HOME="+home)
	stdout, _ := proxy.StdoutPipe()
	var stderr bytes.Buffer
	proxy.Stderr = &stderr
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Process.Kill(); proxy.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "verifying proxy of") {
		t.Fatalf("bftmon proxy: %q %v\n%s", line, err, stderr.String())
	}
	resp, err := http.Get("http://" + listen + "/v1/services/demo")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Bftmon-Verified-Height") == "" || json.Unmarshal(body, &insts) != nil || len(insts) != 1 {
		t.Errorf("GET /v1/services/demo through the proxy: %d %v\n%s", resp.StatusCode, resp.Header, body)
	}
	if out, code := cliRunner(t, bin, home, listen)("health", "demo"); code != 0 || !strings.Contains(out, "passing") {
		t.Errorf("health demo through the proxy: exit %d:\n%s", code, out)
	}

	// bftmon webhook verify --verify: the demo fails, its alert reaches the
	// receiver; the body as delivered is the committed alert, and the same
	// body forged (the state it went to flipped, record and digest made to
	// match, signed with the real secret, as a faulty node could) is not.
	if resp, err := http.Post("http://"+demoAddr+"/down", "text/plain", nil); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	var got hookDelivery
	testutil.WaitFor(t, "the demo's state_change alert at the receiver", 60*time.Second, func() (bool, error) {
		for _, dl := range hook.all() {
			var p notify.Payload
			if json.Unmarshal(dl.body, &p) == nil && p.To == "critical" {
				got = dl
				return true, nil
			}
		}
		return false, fmt.Errorf("%d deliveries", len(hook.all()))
	})
	verifyBody := func(id, ts, sig string, body []byte, extra ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"webhook", "verify", "--secret", hookSecret, "--id", id, "--timestamp", ts, "--signature", sig}, extra...)...)
		cmd.Env = append(os.Environ(), "BFTMON_HOME="+home, "BFTMON_ADDR="+httpAddr)
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	id, ts, sig := got.header.Get(notify.HeaderID), got.header.Get(notify.HeaderTimestamp), got.header.Get(notify.HeaderSignature)
	// The alert's block must be provable (the next header carries its app
	// hash) before its record can be checked.
	testutil.WaitFor(t, "the delivered body verified as committed", 30*time.Second, func() (bool, error) {
		out, code := verifyBody(id, ts, sig, got.body, "--verify")
		return code == 0 && strings.Contains(out, "valid, committed"), fmt.Errorf("exit %d: %s", code, out)
	})
	if out, code := verifyBody(id, ts, sig, got.body); code != 0 || strings.TrimSpace(out) != "valid" {
		t.Errorf("webhook verify without --verify: exit %d: %s", code, out)
	}
	forged, fts, fsig := forgeBody(t, got.body)
	if out, code := verifyBody(id, fts, fsig, forged); code != 0 || strings.TrimSpace(out) != "valid" {
		t.Errorf("a forged, self-consistent body without --verify: exit %d: %s (the signature and record check cannot tell)", code, out)
	}
	if out, code := verifyBody(id, fts, fsig, forged, "--verify"); code == 0 || !strings.Contains(out, "forged") {
		t.Errorf("a forged body with --verify: exit %d, want failure saying forged:\n%s", code, out)
	}
}

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// hookDelivery is one request a hookRecorder got.
type hookDelivery struct {
	header http.Header
	body   []byte
}

// hookRecorder is a real webhook receiver that keeps every request.
type hookRecorder struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []hookDelivery
}

func newHookRecorder(t *testing.T) *hookRecorder {
	h := &hookRecorder{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.got = append(h.got, hookDelivery{r.Header.Clone(), body})
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookRecorder) all() []hookDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// forgeBody is what a faulty node can send under a real alert's id: the
// body with the state it went to flipped, its record and digest made to
// match, signed now with the receiver's secret. It returns the body, its
// timestamp and signature headers.
func forgeBody(t *testing.T, body []byte) ([]byte, string, string) {
	t.Helper()
	al, _, err := notify.CheckBody(body)
	if err != nil {
		t.Fatalf("the honest body: %v", err)
	}
	var p notify.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	al.To = types.STATUS_PASSING
	names := map[string]string{}
	for _, v := range p.Views {
		names[v.Observer] = v.Name
	}
	if p.Record, err = al.Marshal(); err != nil {
		t.Fatal(err)
	}
	p.Alert, p.Digest = api.NewAlert(&al, names), hex.EncodeToString(types.DigestOf(p.Record))
	forged, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	key, err := notify.ParseSecret(hookSecret)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix()
	return forged, strconv.FormatInt(ts, 10), notify.Sign(key, al.Id, ts, forged)
}

func TestRPCURL(t *testing.T) {
	for _, tc := range []struct{ rpc, api, want string }{
		{"tcp://127.0.0.1:26657", "http://10.0.0.5:8500", "http://127.0.0.1:26657"},
		{"tcp://0.0.0.0:26657", "http://10.0.0.5:8500", "http://10.0.0.5:26657"},
		{"tcp://[::]:26657", "http://node1:8500", "http://node1:26657"},
		{"http://rpc.example:443", "http://node1:8500", "http://rpc.example:443"},
	} {
		if got := rpcURL(tc.rpc, tc.api); got != tc.want {
			t.Errorf("rpcURL(%q, %q) = %q, want %q", tc.rpc, tc.api, got, tc.want)
		}
	}
}
