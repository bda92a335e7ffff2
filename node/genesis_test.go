package node_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/node"
)

// TestCheckGenesis: a typo in genesis' app_state is an error naming the
// genesis file and the line.
func TestCheckGenesis(t *testing.T) {
	home := t.TempDir()
	if err := node.Init(node.InitOptions{Home: home}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(home, "config", "genesis.json")
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"as written", "", "", ""},
		{"misspelt operators", `"operators"`, `"operatorz"`, `genesis.json:%d: unknown key "operatorz"`},
		{"misspelt observer key", `"datacenter"`, `"datacentre"`, `genesis.json:%d: unknown key "datacentre" in observers[0]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := bytes.Replace(good, []byte(tc.old), []byte(tc.new), 1)
			want := tc.want
			if tc.old != "" {
				line := 1 + bytes.Count(good[:bytes.Index(good, []byte(tc.old))], []byte("\n"))
				want = strings.Replace(want, "%d", strconv.Itoa(line), 1)
			}
			if err := os.WriteFile(file, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := node.CheckGenesis(file)
			switch {
			case want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Fatalf("error %v, want it to contain %q", err, want)
			}
		})
	}
}

// TestNoteGenesis: an edit of genesis after the chain has state is warned
// about; before it (height 0) or unchanged, nothing is said.
func TestNoteGenesis(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edited   bool
		height   int64
		wantWarn bool
	}{
		{"unchanged", false, 5, false},
		{"edited before the first block", true, 0, false},
		{"edited after", true, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			if err := os.MkdirAll(filepath.Join(home, "data"), 0o700); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			if err := node.NoteGenesis(home, []byte(`{"a": 1}`), 0, log); err != nil {
				t.Fatal(err)
			}
			g := []byte(`{"a": 1}`)
			if tc.edited {
				g = []byte(`{"a": 2}`)
			}
			if err := node.NoteGenesis(home, g, tc.height, log); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "the edit is ignored"); got != tc.wantWarn {
				t.Fatalf("warned %v, want %v: %s", got, tc.wantWarn, logs.String())
			}
		})
	}
}

// TestCheckKeyFiles: after init, a missing validator or node key is an
// error naming the file; a key file others may read is warned about.
func TestCheckKeyFiles(t *testing.T) {
	for _, tc := range []struct {
		name, file          string
		remove              bool
		mode                os.FileMode
		wantErr, wantWarned string
	}{
		{"as created", "", false, 0, "", ""},
		{"validator key gone", "config/priv_validator_key.json", true, 0, "priv_validator_key.json", ""},
		{"node key gone", "config/node_key.json", true, 0, "node_key.json", ""},
		{"operator key readable", node.OperatorKeyFile, false, 0o644, "", "operator_key.json"},
		{"observe token readable", node.ObserveTokenFile, false, 0o640, "", "observe_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			if err := node.Init(node.InitOptions{Home: home}); err != nil {
				t.Fatal(err)
			}
			if tc.remove {
				if err := os.Remove(filepath.Join(home, tc.file)); err != nil {
					t.Fatal(err)
				}
			} else if tc.mode != 0 {
				if err := os.Chmod(filepath.Join(home, tc.file), tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			ccfg, err := node.LoadCometConfig(home)
			if err != nil {
				t.Fatal(err)
			}
			st, err := node.ReadSettings(home)
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			err = node.CheckKeyFiles(home, ccfg, st, slog.New(slog.NewTextHandler(&logs, nil)))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want it to name %s", err, tc.wantErr)
			}
			warned := strings.Contains(logs.String(), "chmod 600")
			if warned != (tc.wantWarned != "") || !strings.Contains(logs.String(), tc.wantWarned) {
				t.Fatalf("logs %q, want a chmod 600 warning naming %q", logs.String(), tc.wantWarned)
			}
		})
	}
}
