package node

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

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
	var unknown []string
	walkTOML(doc, tomlSchema(reflect.TypeOf(cmtcfg.Config{})), "", &unknown)
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	msgs := make([]string, len(unknown))
	for i, key := range unknown {
		msgs[i] = fmt.Sprintf("%s:%d: unknown key %q", path, tomlLine(raw, key), key)
	}
	return fmt.Errorf("%s (CometBFT's configuration has no such keys: check the spelling against a fresh 'bftmon init')", strings.Join(msgs, "; "))
}

// tomlNode is what a configuration key may hold: a table (or an array of
// tables) with its own keys, or a value (nil).
type tomlNode map[string]tomlNode

// tomlSchema lists the keys of a configuration struct, by their
// mapstructure names (",squash" folds an embedded struct's keys in).
func tomlSchema(t reflect.Type) tomlNode {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	out := tomlNode{}
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
			for k, v := range tomlSchema(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = tomlSchema(f.Type)
		if out[name] != nil && len(out[name]) == 0 {
			out[name] = nil // a struct without keys of its own: a value
		}
	}
	return out
}

func walkTOML(doc map[string]any, schema tomlNode, prefix string, unknown *[]string) {
	for k, v := range doc {
		sub, ok := schema[k]
		if !ok {
			*unknown = append(*unknown, prefix+k)
			continue
		}
		if sub == nil {
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			walkTOML(v, sub, prefix+k+".", unknown)
		case []any:
			for _, e := range v {
				if m, ok := e.(map[string]any); ok {
					walkTOML(m, sub, prefix+k+".", unknown)
				}
			}
		}
	}
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
