package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// ObserveTokenFile holds the token that POST /v1/observe requires, relative
// to the home: 32 random bytes, hex-encoded, on one line, mode 0600. The
// node's observer signs the passive results it is given, so only who can
// read this file (the node's user, and whoever the operator shares it with,
// such as a Nagios server: docs/nagios.md) may give them.
const ObserveTokenFile = "config/observe_token"

// observeTokenBytes is the token's length before hex encoding.
const observeTokenBytes = 32

// ObserveToken reads the observe token of home (ObserveTokenFile).
func ObserveToken(home string) (string, error) {
	return ReadObserveToken(filepath.Join(home, ObserveTokenFile))
}

// ReadObserveToken reads an observe token from path: its one line, without
// surrounding white space.
func ReadObserveToken(path string) (string, error) {
	bz, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read observe token: %w", err)
	}
	tok := strings.TrimSpace(string(bz))
	if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("read observe token %s: want one line holding the token (delete the file and restart the node to make a new one)", path)
	}
	return tok, nil
}

// EnsureObserveToken returns the observe token of home, creating
// ObserveTokenFile first if it is missing (homes created before the token
// existed get one at start). It logs the creation, and warns when the file
// is open to the group or others.
func EnsureObserveToken(home string, log *slog.Logger) (string, error) {
	path := filepath.Join(home, ObserveTokenFile)
	created, err := createObserveToken(path)
	if err != nil {
		return "", err
	}
	if created {
		log.Info("created the observe token: 'bftmon submit' on this host reads it", "path", path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("observe token: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("the observe token file is open to other users, who can then make this node's observer sign what they like (chmod 600 it; give a Nagios user its own copy, docs/nagios.md)",
			"path", path, "mode", fmt.Sprintf("%04o", perm))
	}
	return ReadObserveToken(path)
}

// createObserveToken writes a new random token to path unless the file
// exists, and says whether it wrote one. The token is written to a
// temporary file first and linked into place, so that no reader ever sees
// a partial token, and of two processes creating it at once one wins and
// the other reads the winner's.
func createObserveToken(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("observe token: %w", err)
	}
	raw := make([]byte, observeTokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return false, fmt.Errorf("observe token: random bytes: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".observe_token-*") // mode 0600
	if err != nil {
		return false, fmt.Errorf("create observe token: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(raw) + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("write observe token %s: %w", path, err)
	}
	switch err := os.Link(tmp.Name(), path); {
	case errors.Is(err, fs.ErrExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("create observe token: %w", err)
	}
	return true, nil
}
