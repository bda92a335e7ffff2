package checks

import (
	"fmt"
	"strconv"
	"strings"
)

// Perf is one performance-data item of a Nagios plugin:
// 'label'=value[UOM];[warn];[crit];[min];[max].
type Perf struct {
	Label string
	// Value is the number; Known is false for the "U" (undetermined) value.
	Value float64
	Known bool
	UOM   string
	// Warn, Crit, Min and Max are kept as written (thresholds may be ranges).
	Warn, Crit, Min, Max string
}

// PluginOutput is a Nagios plugin's output split per the plugin guidelines.
type PluginOutput struct {
	// Text is the first line without its performance data.
	Text string
	// Long is the long output: the following lines up to the next '|'.
	Long []string
	// Perf is every performance-data item, from the first line and after
	// the long output's '|'.
	Perf []Perf
	// Errors lists performance-data items that did not parse.
	Errors []string
}

// ParsePluginOutput splits a plugin's output into its text, long output and
// performance data:
//
//	TEXT OUTPUT | OPTIONAL PERFDATA
//	LONG TEXT LINE 1
//	LONG TEXT LINE N | PERFDATA LINE 2
//	PERFDATA LINE 3
func ParsePluginOutput(out string) PluginOutput {
	var po PluginOutput
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		return po
	}
	text, perf, _ := strings.Cut(lines[0], "|")
	po.Text = strings.TrimSpace(text)
	po.addPerf(perf)
	inPerf := false
	for _, l := range lines[1:] {
		if inPerf {
			po.addPerf(l)
			continue
		}
		if before, after, ok := strings.Cut(l, "|"); ok {
			if s := strings.TrimSpace(before); s != "" {
				po.Long = append(po.Long, s)
			}
			po.addPerf(after)
			inPerf = true
			continue
		}
		po.Long = append(po.Long, l)
	}
	return po
}

func (po *PluginOutput) addPerf(s string) {
	for _, item := range splitPerf(s) {
		p, err := parsePerf(item)
		if err != nil {
			po.Errors = append(po.Errors, err.Error())
			continue
		}
		po.Perf = append(po.Perf, p)
	}
}

// splitPerf splits on spaces outside single-quoted labels.
func splitPerf(s string) []string {
	var items []string
	var cur strings.Builder
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			quoted = !quoted
			cur.WriteByte(c)
		case (c == ' ' || c == '\t') && !quoted:
			if cur.Len() > 0 {
				items = append(items, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		items = append(items, cur.String())
	}
	return items
}

func parsePerf(item string) (Perf, error) {
	eq := strings.LastIndex(item, "=")
	if eq <= 0 {
		return Perf{}, fmt.Errorf("perfdata %q: want label=value", item)
	}
	label, rest := item[:eq], item[eq+1:]
	if strings.HasPrefix(label, "'") {
		if len(label) < 2 || !strings.HasSuffix(label, "'") {
			return Perf{}, fmt.Errorf("perfdata %q: unbalanced quotes in the label", item)
		}
		label = strings.ReplaceAll(label[1:len(label)-1], "''", "'")
	}
	if label == "" {
		return Perf{}, fmt.Errorf("perfdata %q: empty label", item)
	}
	fields := strings.Split(rest, ";")
	p := Perf{Label: label}
	v := fields[0]
	if v == "U" {
		p.Known = false
	} else {
		end := 0
		for end < len(v) && (v[end] >= '0' && v[end] <= '9' || v[end] == '.' || v[end] == '-' || v[end] == '+' || v[end] == 'e' || v[end] == 'E') {
			end++
		}
		// "e" may begin a unit; back off until the number parses.
		for ; end > 0; end-- {
			if f, err := strconv.ParseFloat(v[:end], 64); err == nil {
				p.Value, p.Known, p.UOM = f, true, v[end:]
				break
			}
		}
		if !p.Known {
			return Perf{}, fmt.Errorf("perfdata %q: value %q is not a number", item, v)
		}
	}
	at := func(i int) string {
		if i < len(fields) {
			return fields[i]
		}
		return ""
	}
	p.Warn, p.Crit, p.Min, p.Max = at(1), at(2), at(3), at(4)
	return p, nil
}
