package node

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCometConfigStrict: the config.toml that init writes loads; a misspelt
// key, an unknown table or a syntax error is an error naming file and line.
func TestCometConfigStrict(t *testing.T) {
	home, _ := initHome(t)
	path := filepath.Join(home, "config", "config.toml")
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCometConfig(home); err != nil {
		t.Fatalf("init's own config.toml: %v", err)
	}
	lineOf := func(s, sub string) int { return strings.Count(s[:strings.Index(s, sub)], "\n") + 1 }
	text := string(good)
	commit := lineOf(text, "timeout_commit")
	for _, tc := range []struct {
		name, edit string
		want       []string
	}{
		{"misspelt key in a table", strings.Replace(text, "timeout_commit", "timeout_comit", 1),
			[]string{path + ":" + strconv.Itoa(commit) + `: unknown key "consensus.timeout_comit"`}},
		{"unknown top-level key", "moniker_typo = \"x\"\n" + text, []string{path + `:1: unknown key "moniker_typo"`}},
		{"unknown table", text + "\n[consensuss]\ntimeout_commit = \"1s\"\n", []string{`unknown key "consensuss"`}},
		{"syntax error", strings.Replace(text, "timeout_commit = ", "timeout_commit == ", 1), []string{path + ":" + strconv.Itoa(commit) + ":"}},
		{"a duration as a bare number", replaceValue(text, "timeout_commit", "500"),
			[]string{path + ":" + strconv.Itoa(commit) + ": consensus.timeout_commit = 500: a bare number, which would be read as 500 nanoseconds", `"500ms"`}},
		{"a duration as a word", replaceValue(text, "timeout_commit", `"fast"`),
			[]string{path + ":" + strconv.Itoa(commit) + `: consensus.timeout_commit = "fast": not a duration`}},
		{"a duration as a float", replaceValue(text, "timeout_propose", "1.5"),
			[]string{path + ":" + strconv.Itoa(lineOf(text, "timeout_propose =")) + ": consensus.timeout_propose = 1.5: a bare number"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.edit), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadCometConfig(home)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v does not say %q", err, w)
				}
			}
		})
	}
}

// replaceValue sets the first line that sets key in text to value.
func replaceValue(text, key, value string) string {
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
			lines[i] = key + " = " + value
			break
		}
	}
	return strings.Join(lines, "\n")
}
