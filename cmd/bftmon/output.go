package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"
)

// useColor tells whether output to w may be coloured: only a terminal, and
// only without NO_COLOR (https://no-color.org: set and not empty).
func useColor(w io.Writer) bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ANSI colours of statuses.
const (
	ansiReset   = "\x1b[0m"
	ansiRed     = "\x1b[31m"
	ansiGreen   = "\x1b[32m"
	ansiYellow  = "\x1b[33m"
	ansiMagenta = "\x1b[35m"
	ansiDim     = "\x1b[2m"
)

// statusColor is the colour of a cell that starts with a status word, or
// "" for any other cell.
func statusColor(cell string) string {
	word, _, _ := strings.Cut(cell, " ")
	switch strings.ToLower(word) {
	case "passing", "good":
		return ansiGreen
	case "warning":
		return ansiYellow
	case "critical", "suspect":
		return ansiRed
	case "disputed", "stale", "unknown":
		return ansiMagenta
	case "pending":
		return ansiDim
	}
	return ""
}

// table prints rows in aligned columns, two spaces apart, like
// text/tabwriter; with colour, status cells are coloured after padding, so
// escapes never upset the alignment.
type table struct {
	w     io.Writer
	color bool
	rows  [][]string
}

// newTable starts a table with its header row.
func newTable(w io.Writer, color bool, header ...string) *table {
	return &table{w: w, color: color, rows: [][]string{header}}
}

// row adds a row; values are formatted with %v.
func (t *table) row(cells ...any) {
	r := make([]string, len(cells))
	for i, c := range cells {
		r[i] = fmt.Sprint(c)
	}
	t.rows = append(t.rows, r)
}

// flush writes the table.
func (t *table) flush() error {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i == len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for ri, r := range t.rows {
		for i, c := range r {
			last := i == len(r)-1
			pad := ""
			if !last {
				pad = strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2)
			}
			if col := statusColor(c); t.color && ri > 0 && col != "" {
				c = col + c + ansiReset
			}
			b.WriteString(c)
			b.WriteString(pad)
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(t.w, b.String())
	return err
}
