package node_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/keys"
	"github.com/bftmon/bftmon/node"
)

// TestLoadTokens: config/tokens.json maps tokens to operator keys; a
// missing file is no tokens; a short token, a missing key file or a half
// instance binding is refused naming the entry, never the token.
func TestLoadTokens(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, "config"), 0o700); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if toks, err := node.LoadTokens(home, log); err != nil || len(toks) != 0 {
		t.Fatalf("no file: %v %v", toks, err)
	}
	k, err := keys.Generate("op")
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Save(filepath.Join(home, "config/op.json"), k); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(home, node.TokensFile), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"tokens": [{"token": "0123456789abcdef0123", "key": "config/op.json", "service": "web", "instance": "web-1"}]}`)
	toks, err := node.LoadTokens(home, log)
	if err != nil || len(toks) != 1 || !toks[0].Key.Equal(k.Private) || toks[0].Instance != "web-1" {
		t.Fatalf("load: %+v %v", toks, err)
	}
	for _, c := range []struct{ file, want string }{
		{`{"tokens": [{"token": "short-secret", "key": "config/op.json"}]}`, "shorter than 16"},
		{`{"tokens": [{"token": "0123456789abcdef0123", "key": "config/none.json"}]}`, "token 0"},
		{`{"tokens": [{"token": "0123456789abcdef0123"}]}`, "no key file"},
		{`{"tokens": [{"token": "0123456789abcdef0123", "key": "config/op.json", "service": "web"}]}`, "both service and instance"},
		{`{"tokens": [`, "read tokens"},
	} {
		write(c.file)
		_, err := node.LoadTokens(home, log)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "0123456789abcdef0123") {
			t.Errorf("%s: %v, want %q (and never the token)", c.file, err, c.want)
		}
	}
}
