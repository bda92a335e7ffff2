// Package keys reads, writes and generates the ed25519 key files of
// observers and operators.
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bftmon/bftmon/app/types"
)

// File is the JSON form of a key file.
type File struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	PubKey  string `json:"pub_key"`
	PrivKey string `json:"priv_key"`
}

// Key is a loaded key.
type Key struct {
	Name    string
	Private ed25519.PrivateKey
}

// Public returns the public key.
func (k Key) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// ID returns the key id (types.KeyID of the public key).
func (k Key) ID() string { return types.KeyID(k.Public()) }

// PubBase64 returns the public key in base64, as genesis files hold it.
func (k Key) PubBase64() string { return base64.StdEncoding.EncodeToString(k.Public()) }

// Generate makes a new random key.
func Generate(name string) (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generate key %s: %w", name, err)
	}
	return Key{Name: name, Private: priv}, nil
}

// Save writes the key to path (mode 0600), creating the directory.
func Save(path string, k Key) error {
	f := File{Name: k.Name, ID: k.ID(), PubKey: k.PubBase64(), PrivKey: base64.StdEncoding.EncodeToString(k.Private)}
	bz, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("save key %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save key %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(bz, '\n'), 0o600); err != nil {
		return fmt.Errorf("save key %s: %w", path, err)
	}
	return nil
}

// Load reads a key file written by Save.
func Load(path string) (Key, error) {
	bz, err := os.ReadFile(path)
	if err != nil {
		return Key{}, fmt.Errorf("load key: %w", err)
	}
	var f File
	if err := json.Unmarshal(bz, &f); err != nil {
		return Key{}, fmt.Errorf("load key %s: not a bftmon key file: %w", path, err)
	}
	priv, err := base64.StdEncoding.DecodeString(f.PrivKey)
	if err != nil || len(priv) != ed25519.PrivateKeySize {
		return Key{}, fmt.Errorf("load key %s: priv_key is not a base64 ed25519 private key", path)
	}
	return Key{Name: f.Name, Private: ed25519.PrivateKey(priv)}, nil
}

// LoadOrGenerate loads the key at path, or generates and saves one named name.
func LoadOrGenerate(path, name string) (Key, error) {
	if _, err := os.Stat(path); err == nil {
		return Load(path)
	}
	k, err := Generate(name)
	if err != nil {
		return Key{}, err
	}
	return k, Save(path, k)
}
