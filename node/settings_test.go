package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/node"
)

// TestReadSettingsErrors: typos and bad values in config/bftmon.json are
// errors that name the file, the line and the setting, not silent defaults.
func TestReadSettingsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"defaults", `{"http_addr": "127.0.0.1:1"}`, ""},
		{"misspelt key", "{\n  \"http_adr\": \"127.0.0.1:1\"\n}", `bftmon.json:2: unknown key "http_adr"`},
		{"misspelt section", "{\n  \"http_addr\": \"127.0.0.1:1\",\n  \"notfy\": {}\n}", `bftmon.json:3: unknown key "notfy"`},
		{"misspelt receiver key", "{\n  \"notify\": {\"receivers\": [\n    {\"name\": \"pager\", \"url\": \"http://h/\",\n     \"secrett\": \"x\"}]}\n}",
			`bftmon.json:4: unknown key "secrett" in notify.receivers[0]`},
		{"syntax", "{\n  \"http_addr\": \"127.0.0.1:1\"\n  \"dns_addr\": \"\"\n}", "bftmon.json:3: syntax error"},
		{"zero flush", "{\n  \"flush_interval\": \"0s\"\n}", "bftmon.json:2: flush_interval 0s: want a positive duration"},
		{"bad duration", "{\n\n  \"flush_interval\": \"soon\"\n}", `bftmon.json:3: flush_interval: "soon": want a Go duration`},
		{"negative probes", "{\n  \"max_concurrent_probes\": -5\n}", "bftmon.json:2: max_concurrent_probes -5: want at least 1"},
		{"zero connections", "{\n  \"http_max_connections\": 0\n}", "bftmon.json:2: http_max_connections 0: want at least 1"},
		{"per-client cap above the cap", "{\n  \"http_max_connections\": 10,\n  \"http_max_connections_per_client\": 11\n}", "bftmon.json:3: http_max_connections_per_client 11: want 1 to http_max_connections (10)"},
		{"no reserved connection", "{\n  \"http_reserved_connections\": 0\n}", "bftmon.json:2: http_reserved_connections 0: want at least 1"},
		{"negative retention", "{\n  \"retain_blocks\": -1\n}", "bftmon.json:2: retain_blocks -1: want 0 (keep every block) or more"},
		{"negative snapshot interval", "{\n\n  \"snapshot_interval\": -10\n}", "bftmon.json:3: snapshot_interval -10: want 0 (no snapshots) or more"},
		{"negative tx index retention", "{\n  \"tx_index_retain_blocks\": -1\n}", "bftmon.json:2: tx_index_retain_blocks -1: want 0 (index every block) or more"},
		{"tx index keeps all", "{\n  \"tx_index_retain_blocks\": 0\n}", ""},
		{"no versions kept", "{\n  \"keep_versions\": 0\n}", "bftmon.json:2: keep_versions 0: want at least 1"},
		{"retention off", "{\n  \"retain_blocks\": 0, \"snapshot_interval\": 0\n}", ""},
		{"receiver value", "{\"notify\": {\n  \"handoff_delay\": \"-1s\"}}", "bftmon.json:2: notify.handoff_delay"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			if err := os.MkdirAll(filepath.Join(home, "config"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(home, node.SettingsFile), []byte(tc.raw), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := node.ReadSettings(home)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
