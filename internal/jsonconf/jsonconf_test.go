package jsonconf_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/internal/jsonconf"
)

type dur time.Duration

func (d *dur) UnmarshalJSON(b []byte) error {
	v, err := time.ParseDuration(strings.Trim(string(b), `"`))
	*d = dur(v)
	return err
}

type inner struct {
	Name   string `json:"name"`
	Secret string `json:"secret,omitempty"`
}

type conf struct {
	Addr  string           `json:"addr"`
	Every dur              `json:"every"`
	Items []inner          `json:"items"`
	Tags  map[string]inner `json:"tags"`
}

// TestDecode: every error names the file and the line of the culprit.
func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, raw, want string
	}{
		{"ok", "{\n \"addr\": \"a\",\n \"every\": \"1s\",\n \"items\": [{\"name\": \"x\"}]\n}", ""},
		{"unknown top key", "{\n \"addr\": \"a\",\n \"adr\": \"b\"\n}", `f.json:3: unknown key "adr" (known keys: addr, every, items, tags)`},
		{"unknown nested key", "{\n \"items\": [\n  {\"name\": \"x\"},\n  {\"name\": \"y\",\n   \"secrett\": \"s\"}\n ]\n}", `f.json:5: unknown key "secrett" in items[1]`},
		{"unknown in map value", "{\"tags\": {\n \"a\": {\"nme\": 1}}}", `f.json:2: unknown key "nme" in tags.a`},
		{"syntax", "{\n \"addr\": \"a\"\n \"every\": \"1s\"\n}", "f.json:3: syntax error"},
		{"truncated", "{\n \"addr\": \"a\",\n", "f.json:3: syntax error: the file ends early"},
		{"wrong type", "{\n \"addr\": 5\n}", "f.json:2: addr: a JSON number where a string belongs"},
		{"bad value", "{\n\n \"every\": \"soon\"\n}", "f.json:3: every:"},
		{"trailing", "{}\n{}", "f.json:2: syntax error: more after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c conf
			_, err := jsonconf.Decode("f.json", []byte(tc.raw), &c)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestPositions: Where names the line of a key, and only the file for a
// key the file leaves out.
func TestPositions(t *testing.T) {
	pos := jsonconf.Keys([]byte("{\n \"a\": 1,\n \"b\": [\n  {\"c\": 2}\n ]\n}"))
	for path, want := range map[string]string{"a": "f:2: a", "b[0].c": "f:4: b[0].c", "d": "f: d"} {
		if got := pos.Where("f", path); got != want {
			t.Errorf("Where(%s) = %q, want %q", path, got, want)
		}
	}
}
