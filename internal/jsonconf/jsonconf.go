// Package jsonconf decodes JSON settings files strictly: unknown keys,
// syntax errors, wrong types and values their types refuse are errors that
// name the file, the line and the key, so that an operator finds the typo.
package jsonconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// Positions maps the path of every key of a decoded file
// ("notify.receivers[1].secret") to the line it is on.
type Positions map[string]int

// Where is "file:line: path", or "file: path" for a path not in the file.
func (p Positions) Where(file, path string) string {
	if line, ok := p[path]; ok {
		return fmt.Sprintf("%s:%d: %s", file, line, path)
	}
	return fmt.Sprintf("%s: %s", file, path)
}

// Line is the 1-based line of byte offset off in raw.
func Line(raw []byte, off int64) int {
	off = min(max(off, 0), int64(len(raw)))
	return 1 + bytes.Count(raw[:off], []byte("\n"))
}

// Decode decodes raw, the content of file, into v (a pointer to a struct),
// refusing keys that v's type does not have. Errors start with
// "file:line:". It returns where each key is, for errors about values.
func Decode(file string, raw []byte, v any) (Positions, error) {
	w := &walker{raw: raw, dec: json.NewDecoder(bytes.NewReader(raw)), pos: Positions{}}
	if err := w.value(reflect.TypeOf(v), ""); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return nil, fmt.Errorf("%s:%d: syntax error: %v", file, Line(raw, se.Offset), err)
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return nil, fmt.Errorf("%s:%d: syntax error: the file ends early (a missing } or ])", file, Line(raw, int64(len(raw))))
		}
		return nil, fmt.Errorf("%s:%w", file, err)
	}
	if _, err := w.dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s:%d: syntax error: more after the end of the top-level value", file, Line(raw, w.dec.InputOffset()))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%s:%d: %s: a JSON %s where a %s belongs", file, Line(raw, te.Offset), te.Field, te.Value, te.Type)
		}
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return w.pos, nil
}

// walker follows the tokens of a file along the Go type it decodes into.
type walker struct {
	raw []byte
	dec *json.Decoder
	pos Positions
}

// keyLine is the line of the next token, skipping separators.
func (w *walker) nextLine() int {
	i := int(w.dec.InputOffset())
	for i < len(w.raw) && strings.IndexByte(" \t\r\n,:", w.raw[i]) >= 0 {
		i++
	}
	return Line(w.raw, int64(i))
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// value consumes one value that decodes into t, at path.
func (w *walker) value(t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer && !t.Implements(unmarshaler) {
		t = t.Elem()
	}
	if t != nil && (t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler)) {
		line := w.nextLine()
		var raw json.RawMessage
		if err := w.dec.Decode(&raw); err != nil {
			return err
		}
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return fmt.Errorf("%d: %s: %v", line, path, err)
		}
		return nil
	}
	tok, err := w.dec.Token()
	if err != nil {
		return err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar: its type is checked by Decode
	}
	switch {
	case d == '{' && t != nil && t.Kind() == reflect.Struct:
		fields := jsonFields(t)
		for w.dec.More() {
			line := w.nextLine()
			k, err := w.dec.Token()
			if err != nil {
				return err
			}
			key, _ := k.(string)
			p := join(path, key)
			w.pos[p] = line
			ft, ok := lookup(fields, key)
			if !ok {
				return fmt.Errorf("%d: unknown key %q%s (known keys: %s)", line, key, in(path), strings.Join(names(fields), ", "))
			}
			if err := w.value(ft, p); err != nil {
				return err
			}
		}
	case d == '{':
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		for w.dec.More() {
			line := w.nextLine()
			k, err := w.dec.Token()
			if err != nil {
				return err
			}
			key, _ := k.(string)
			w.pos[join(path, key)] = line
			if err := w.value(elem, join(path, key)); err != nil {
				return err
			}
		}
	case d == '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			p := path + "[" + strconv.Itoa(i) + "]"
			w.pos[p] = w.nextLine()
			if err := w.value(elem, p); err != nil {
				return err
			}
		}
	}
	_, err = w.dec.Token() // the closing delimiter
	return err
}

func in(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

type field struct {
	name string
	t    reflect.Type
}

// jsonFields are the keys encoding/json decodes into t.
func jsonFields(t reflect.Type) []field {
	var out []field
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				out = append(out, jsonFields(ft)...)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, field{name, f.Type})
	}
	return out
}

// lookup finds key as encoding/json does: exactly, else ignoring case.
func lookup(fields []field, key string) (reflect.Type, bool) {
	for _, f := range fields {
		if f.name == key {
			return f.t, true
		}
	}
	for _, f := range fields {
		if strings.EqualFold(f.name, key) {
			return f.t, true
		}
	}
	return nil, false
}

func names(fields []field) []string {
	out := make([]string, len(fields))
	for i, f := range fields {
		out[i] = f.name
	}
	return out
}

// Keys is where each key of raw is (nil if raw does not parse), without
// checking them against a type.
func Keys(raw []byte) Positions {
	w := &walker{raw: raw, dec: json.NewDecoder(bytes.NewReader(raw)), pos: Positions{}}
	if len(raw) == 0 || w.value(nil, "") != nil {
		return nil
	}
	return w.pos
}
