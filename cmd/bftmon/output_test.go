package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTableAlignment checks that columns line up with and without colour:
// escapes are added after padding, so stripping them gives the same text.
func TestTableAlignment(t *testing.T) {
	render := func(color bool) string {
		var b bytes.Buffer
		tb := newTable(&b, color, "INSTANCE", "STATUS", "SINCE")
		tb.row("web-1", "passing", 12)
		tb.row("web-10", "critical", 3)
		tb.row("w", "pending", 100)
		if err := tb.flush(); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	plain := render(false)
	want := "INSTANCE  STATUS    SINCE\n" +
		"web-1     passing   12\n" +
		"web-10    critical  3\n" +
		"w         pending   100\n"
	if plain != want {
		t.Errorf("plain table:\n%s\nwant\n%s", plain, want)
	}
	colored := render(true)
	for _, code := range []string{ansiGreen + "passing" + ansiReset, ansiRed + "critical" + ansiReset, ansiDim + "pending" + ansiReset} {
		if !strings.Contains(colored, code) {
			t.Errorf("coloured table lacks %q:\n%q", code, colored)
		}
	}
	if strings.Contains(colored, ansiGreen+"STATUS") || strings.Contains(plain, "\x1b") {
		t.Errorf("escapes where none belong:\n%q\n%q", colored, plain)
	}
	stripped := colored
	for _, esc := range []string{ansiReset, ansiRed, ansiGreen, ansiYellow, ansiMagenta, ansiDim} {
		stripped = strings.ReplaceAll(stripped, esc, "")
	}
	if stripped != plain {
		t.Errorf("coloured table misaligned:\n%s\nwant\n%s", stripped, plain)
	}
}

// TestUseColor: colour only on a terminal, never with NO_COLOR set.
func TestUseColor(t *testing.T) {
	t.Setenv("NO_COLOR", "")
	var b bytes.Buffer
	if useColor(&b) {
		t.Error("colour into a buffer")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if useColor(f) {
		t.Error("colour into a regular file")
	}
	tty := openPTY(t)
	if !useColor(tty) {
		t.Error("no colour on a terminal")
	}
	t.Setenv("NO_COLOR", "1")
	if useColor(tty) {
		t.Error("colour on a terminal with NO_COLOR=1")
	}
}

// openPTY opens a new pseudo-terminal and returns its terminal side.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pty's terminal: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}
