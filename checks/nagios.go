package checks

import (
	"strconv"
	"strings"

	"github.com/bftmon/bftmon/app/types"
)

// String writes p back in the plugin guidelines' form:
// 'label'=value[UOM];[warn];[crit];[min];[max], trailing empty fields left out.
func (p Perf) String() string {
	label := p.Label
	if strings.ContainsAny(label, " '=") {
		label = "'" + strings.ReplaceAll(label, "'", "''") + "'"
	}
	value := "U"
	if p.Known {
		value = strconv.FormatFloat(p.Value, 'f', -1, 64) + p.UOM
	}
	fields := []string{label + "=" + value, p.Warn, p.Crit, p.Min, p.Max}
	for len(fields) > 1 && fields[len(fields)-1] == "" {
		fields = fields[:len(fields)-1]
	}
	return strings.Join(fields, ";")
}

// NagiosWord is the Nagios name of a probe status: OK, WARNING, CRITICAL or
// UNKNOWN.
func NagiosWord(s types.Status) string {
	switch s {
	case types.STATUS_PASSING:
		return "OK"
	case types.STATUS_WARNING:
		return "WARNING"
	case types.STATUS_CRITICAL:
		return "CRITICAL"
	default:
		return "UNKNOWN"
	}
}

// NagiosLine renders a result as a Nagios plugin would print it:
// "STATUS - output | perfdata". Probes other than plugins report their
// latency as the perfdata item time, in seconds, as check_http does.
func NagiosLine(r Result) string {
	perf := r.Perf
	if len(perf) == 0 {
		perf = []Perf{{Label: "time", Value: r.Latency.Seconds(), Known: true, UOM: "s", Min: "0"}}
	}
	items := make([]string, len(perf))
	for i, p := range perf {
		items[i] = p.String()
	}
	return NagiosWord(r.Status) + " - " + r.Output + " | " + strings.Join(items, " ")
}
