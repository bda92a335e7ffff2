package checks

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/bftmon/bftmon/app/types"
)

func tcpCheck(addr string) types.Check {
	return types.Check{Id: "t", Kind: "tcp", Tcp: &types.TCPParams{Address: addr}, IntervalMs: 1000, TimeoutMs: 5000}
}

// listen accepts and closes connections on a local port until the test ends.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func TestTCPProbe(t *testing.T) {
	open := listen(t).Addr().String()
	closed := listen(t)
	closed.Close()
	gone := closed.Addr().String()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	cases := []struct {
		name   string
		ctx    context.Context
		addr   string
		want   types.Status
		output string
	}{
		{"open port", context.Background(), open, types.STATUS_PASSING, "TCP connect to " + open + " ok"},
		{"closed port", context.Background(), gone, types.STATUS_CRITICAL, "dial tcp " + gone + ": connect: connection refused"},
		{"caller cancelled", cancelled, open, types.STATUS_UNKNOWN, "context canceled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := RunOnce(tc.ctx, tcpCheck(tc.addr))
			if r.Status != tc.want || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status.Name(), r.Output, tc.want.Name(), tc.output)
			}
		})
	}
}

// banner answers every connection: it writes greeting, then echoes what it
// reads back upper-cased, a line at a time.
func banner(t *testing.T, greeting string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, greeting)
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					io.WriteString(c, strings.ToUpper(sc.Text())+"\n")
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestTCPSendExpect(t *testing.T) {
	addr := banner(t, "220 mail.test ESMTP\n")
	cases := []struct {
		name         string
		send, expect string
		timeout      int64
		want         types.Status
		output       string
	}{
		{"banner expected", "", "220 ", 5000, types.STATUS_PASSING, `answered "220 "`},
		{"echo expected", "ping\n", "PING", 5000, types.STATUS_PASSING, `answered "PING"`},
		{"send only", "quit\n", "", 5000, types.STATUS_PASSING, "sent 5 bytes"},
		{"answer missing", "ping\n", "PONG", 300, types.STATUS_CRITICAL, `want "PONG", got "220 mail.test ESMTP PING"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tcpCheck(addr)
			c.Tcp.Send, c.Tcp.Expect, c.TimeoutMs = tc.send, tc.expect, tc.timeout
			r := RunOnce(context.Background(), c)
			if r.Status != tc.want || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status.Name(), r.Output, tc.want.Name(), tc.output)
			}
		})
	}
}
