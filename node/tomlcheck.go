package node

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"

	cmtcfg "github.com/cometbft/cometbft/config"
	"github.com/pelletier/go-toml/v2"
)

// checkCometConfig reads config.toml strictly: a syntax error names its line,
// and so does every key CometBFT's configuration does not have (viper would
// ignore it silently: a misspelt `timeout_comit` leaves the default).
func checkCometConfig(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read CometBFT config: %w", err)
	}
	var doc map[string]any
	if err := toml.Unmarshal(raw, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return fmt.Errorf("%s:%d:%d: %s", path, row, col, de.Error())
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	var bad []tomlProblem
	walkTOML(doc, tomlSchema(reflect.TypeOf(cmtcfg.Config{})), "", &bad)
	if len(bad) == 0 {
		return nil
	}
	sort.Slice(bad, func(i, j int) bool { return bad[i].key < bad[j].key })
	msgs := make([]string, len(bad))
	unknown := false
	for i, b := range bad {
		msgs[i] = fmt.Sprintf("%s:%d: %s", path, tomlLine(raw, b.key), b.what)
		unknown = unknown || b.unknown
	}
	if unknown {
		return fmt.Errorf("%s (CometBFT's configuration has no such keys: check the spelling against a fresh 'bftmon init')", strings.Join(msgs, "; "))
	}
	return errors.New(strings.Join(msgs, "; "))
}

// tomlProblem is what is wrong with one key of a configuration file.
type tomlProblem struct {
	key     string // dotted, with its tables
	what    string
	unknown bool // the key does not exist (rather than a bad value)
}

// durationType is the type of CometBFT's duration settings. Viper reads a
// bare number as nanoseconds (timeout_commit = 500 is 500 ns, silently),
// and a word as an error that names neither file nor line.
var durationType = reflect.TypeOf(time.Duration(0))

// tomlNode is what a configuration key may hold: a table (or an array of
// tables) with its own keys, or a value (keys nil), which may be a
// duration.
type tomlNode struct {
	keys     map[string]*tomlNode
	duration bool
}

// tomlSchema lists the keys of a configuration type, by their mapstructure
// names (",squash" folds an embedded struct's keys in).
func tomlSchema(t reflect.Type) *tomlNode {
	if t == durationType {
		return &tomlNode{duration: true}
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return &tomlNode{}
	}
	out := &tomlNode{keys: map[string]*tomlNode{}}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("mapstructure")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "squash") {
			for k, v := range tomlSchema(f.Type).keys {
				out.keys[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out.keys[name] = tomlSchema(f.Type)
	}
	if len(out.keys) == 0 {
		return &tomlNode{} // a struct without keys of its own: a value
	}
	return out
}

// walkTOML collects what is wrong in doc against schema: keys it does not
// have, and durations that are not strings time.ParseDuration reads.
func walkTOML(doc map[string]any, schema *tomlNode, prefix string, bad *[]tomlProblem) {
	for k, v := range doc {
		sub, ok := schema.keys[k]
		key := prefix + k
		if !ok {
			*bad = append(*bad, tomlProblem{key: key, what: fmt.Sprintf("unknown key %q", key), unknown: true})
			continue
		}
		if sub.duration {
			if msg := badDuration(v); msg != "" {
				*bad = append(*bad, tomlProblem{key: key, what: fmt.Sprintf("%s = %v: %s", key, tomlValue(v), msg)})
			}
			continue
		}
		if sub.keys == nil {
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			walkTOML(v, sub, key+".", bad)
		case []any:
			for _, e := range v {
				if m, ok := e.(map[string]any); ok {
					walkTOML(m, sub, key+".", bad)
				}
			}
		}
	}
}

// badDuration says why v is not a duration setting ("" if it is one).
func badDuration(v any) string {
	switch v := v.(type) {
	case string:
		if _, err := time.ParseDuration(v); err != nil {
			return `not a duration: write a number with its unit, such as "500ms", "1s" or "1m30s"`
		}
		return ""
	case int64, float64:
		return fmt.Sprintf(`a bare number, which would be read as %v nanoseconds: write it with its unit, such as "%vms" or "%vs", in quotes`, v, v, v)
	default:
		return `not a duration: write a quoted number with its unit, such as "500ms" or "1s"`
	}
}

// tomlValue is v as written in TOML, for messages.
func tomlValue(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

var tomlHeader = regexp.MustCompile(`^\s*\[\[?\s*([^\]]+?)\s*\]\]?`)

// tomlLine is the line where key (dotted, with its tables) is set, or 0.
func tomlLine(raw []byte, key string) int {
	table, name := "", key
	if i := strings.LastIndex(key, "."); i >= 0 {
		table, name = key[:i], key[i+1:]
	}
	section := ""
	for i, line := range strings.Split(string(raw), "\n") {
		if m := tomlHeader.FindStringSubmatch(line); m != nil {
			section = m[1]
			if section == key { // an unknown table
				return i + 1
			}
			continue
		}
		if section != table {
			continue
		}
		if k, _, ok := strings.Cut(strings.TrimSpace(line), "="); ok && strings.Trim(strings.TrimSpace(k), `"`) == name {
			return i + 1
		}
	}
	return 0
}
