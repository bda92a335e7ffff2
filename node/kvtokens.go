package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/keys"
)

// TokensFile maps the tokens of Consul-style writes (PUT /v1/kv,
// /v1/txn, /v1/session) to operator keys this node holds, relative to the
// home. It is this node's alone, never replicated: a token is a local
// credential for a key the node signs with. Format:
//
//	{"tokens": [{"token": "SECRET", "key": "config/operator_key.json",
//	             "service": "web", "instance": "web-1"}]}
//
// key is the operator key file (relative to the home, or absolute); the
// scope comes from genesis (the operator's prefixes). service and
// instance, optional, are the instance a session created without a Node
// is bound to (what Consul's Lock and Semaphore helpers create). Keep the
// file mode 0600.
const TokensFile = "config/tokens.json"

type tokensFile struct {
	Tokens []struct {
		Token    string `json:"token"`
		Key      string `json:"key"`
		Service  string `json:"service"`
		Instance string `json:"instance"`
	} `json:"tokens"`
}

// LoadTokens reads home's TokensFile (none: no tokens). It warns when the
// file is open to other users, and never logs a token.
func LoadTokens(home string, log *slog.Logger) ([]server.Token, error) {
	path := filepath.Join(home, TokensFile)
	bz, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tokens: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the tokens file is open to other users, who can then write with its operator keys (chmod 600 it)", "path", path)
	}
	var f tokensFile
	if err := json.Unmarshal(bz, &f); err != nil {
		return nil, fmt.Errorf("read tokens %s: %w", path, err)
	}
	out := make([]server.Token, 0, len(f.Tokens))
	for i, t := range f.Tokens {
		if len(t.Token) < 16 {
			return nil, fmt.Errorf("read tokens %s: token %d is shorter than 16 characters: use a long random one (openssl rand -hex 32)", path, i)
		}
		if t.Key == "" {
			return nil, fmt.Errorf("read tokens %s: token %d has no key file", path, i)
		}
		kp := t.Key
		if !filepath.IsAbs(kp) {
			kp = filepath.Join(home, kp)
		}
		k, err := keys.Load(kp)
		if err != nil {
			return nil, fmt.Errorf("read tokens %s: token %d: %w", path, i, err)
		}
		if (t.Service == "") != (t.Instance == "") {
			return nil, fmt.Errorf("read tokens %s: token %d: give both service and instance, or neither", path, i)
		}
		out = append(out, server.Token{Secret: t.Token, Key: k.Private, Service: t.Service, Instance: t.Instance})
	}
	if len(out) > 0 {
		log.Info("loaded the tokens of Consul-style writes", "path", path, "tokens", len(out))
	}
	return out, nil
}
