package node_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/node"
)

// logBuffer is a log destination that tests read while the node writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// checkTokenFile fails t unless home holds an observe token as the node
// writes it: one line of 64 hex digits, mode 0600. It returns the token.
func checkTokenFile(t *testing.T, home string) string {
	t.Helper()
	path := filepath.Join(home, node.ObserveTokenFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("observe token: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s: mode %04o, want 0600", path, perm)
	}
	bz, _ := os.ReadFile(path)
	line, ok := strings.CutSuffix(string(bz), "\n")
	if raw, err := hex.DecodeString(line); !ok || err != nil || len(raw) != 32 {
		t.Errorf("%s holds %q, want 32 hex-encoded bytes on one line", path, bz)
	}
	tok, err := node.ObserveToken(home)
	if err != nil || tok != line {
		t.Errorf("ObserveToken(%s) = %q, %v; want %q", home, tok, err, line)
	}
	return tok
}

// TestObserveTokenCreated: init and testnet give every home its own
// observe token.
func TestObserveTokenCreated(t *testing.T) {
	seen := map[string]string{}
	saw := func(home, tok string) {
		if other, dup := seen[tok]; dup {
			t.Errorf("%s and %s have the same observe token", other, home)
		}
		seen[tok] = home
	}
	for _, name := range []string{"a", "b"} {
		home := filepath.Join(t.TempDir(), name)
		if err := node.Init(node.InitOptions{Home: home}); err != nil {
			t.Fatal(err)
		}
		saw(home, checkTokenFile(t, home))
	}
	nodes, err := node.Testnet(node.TestnetOptions{Out: t.TempDir(), Nodes: 3, Datacenters: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		saw(n.Home, checkTokenFile(t, n.Home))
	}
}

// TestEnsureObserveToken: a home without a token (one made before tokens
// existed) gets one, logged with its path; an existing token is kept, and
// warned about if others may read it; a file that holds no token is an
// error naming it.
func TestEnsureObserveToken(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(path string) // the token file's state before
		keep    string            // the token that must come back ("": a new one)
		logs    []string          // in the log
		quiet   []string          // not in the log
		err     string            // the error, if any
	}{
		{name: "missing", prepare: func(string) {},
			logs: []string{"level=INFO", "created the observe token", node.ObserveTokenFile}, quiet: []string{"level=WARN"}},
		{name: "kept", prepare: func(p string) { os.WriteFile(p, []byte("abc123\n"), 0o600) }, keep: "abc123",
			quiet: []string{"created", "level=WARN"}},
		{name: "readable by the group", prepare: func(p string) { os.WriteFile(p, []byte("abc123\n"), 0o600); os.Chmod(p, 0o640) }, keep: "abc123",
			logs: []string{"level=WARN", "open to other users", "mode=0640", node.ObserveTokenFile}, quiet: []string{"created"}},
		{name: "readable by all", prepare: func(p string) { os.WriteFile(p, []byte("abc123\n"), 0o600); os.Chmod(p, 0o604) }, keep: "abc123",
			logs: []string{"level=WARN", "mode=0604"}},
		{name: "empty", prepare: func(p string) { os.WriteFile(p, nil, 0o600) }, err: "want one line holding the token"},
		{name: "two lines", prepare: func(p string) { os.WriteFile(p, []byte("abc\ndef\n"), 0o600) }, err: "want one line holding the token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			os.MkdirAll(filepath.Join(home, "config"), 0o700)
			path := filepath.Join(home, node.ObserveTokenFile)
			tc.prepare(path)
			var logs logBuffer
			tok, err := node.EnsureObserveToken(home, slog.New(slog.NewTextHandler(&logs, nil)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), path) {
					t.Fatalf("err = %v, want one naming %s and saying %q", err, path, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.keep != "" && tok != tc.keep {
				t.Fatalf("token %q, want the existing %q", tok, tc.keep)
			}
			if tc.keep == "" && checkTokenFile(t, home) != tok {
				t.Fatalf("token %q is not the file's", tok)
			}
			for _, w := range tc.logs {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
			for _, w := range tc.quiet {
				if strings.Contains(logs.String(), w) {
					t.Errorf("log has %q:\n%s", w, logs.String())
				}
			}
		})
	}
}

// TestObserveTokenAtStart starts a real node from a home without a token,
// as homes made before tokens existed are: it writes one, says where, and
// its API takes passive results with that token only.
func TestObserveTokenAtStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home, httpAddr := t.TempDir(), freeAddr(t)
	if err := node.Init(node.InitOptions{Home: home, ChainID: "tok-chain", HTTPAddr: httpAddr,
		RPCAddr: "tcp://" + freeAddr(t), P2PAddr: "tcp://" + freeAddr(t), BlockInterval: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	old := checkTokenFile(t, home)
	if err := os.Remove(filepath.Join(home, node.ObserveTokenFile)); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	n, err := node.Start(ctx, node.Config{Home: home, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	tok := checkTokenFile(t, home)
	if tok == old {
		t.Fatal("the node wrote the removed token again")
	}
	if l := logs.String(); !strings.Contains(l, "level=INFO msg=\"created the observe token") || !strings.Contains(l, filepath.Join(home, node.ObserveTokenFile)) {
		t.Errorf("the node did not log the new token's path:\n%s", l)
	}
	c := api.NewClient(n.HTTPAddr())
	waitFor(t, "the observer set committed", 30*time.Second, func() (bool, error) {
		st, err := c.Status(ctx)
		return err == nil && st.Datacenter != "", err
	})
	pr := api.PassiveResult{Service: "nope", Instance: "nope-1", Check: "p", Code: 2}
	for _, tc := range []struct {
		name, token string
		want        error
	}{
		{"the removed token", old, api.ErrUnauthorized},
		{"no token", "", api.ErrUnauthorized},
		{"the new token", tok, api.ErrNotFound}, // past the token: the check is not registered
	} {
		if _, err := c.Observe(ctx, tc.token, pr); !errors.Is(err, tc.want) {
			t.Errorf("observe with %s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
