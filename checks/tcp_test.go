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
// reads back upper-cased, a line at a time, until it reads "quit", when it
// closes the connection. Each connection is announced on the returned
// channel once the greeting is written, if there is room.
func banner(t *testing.T, greeting string) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	greeted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, greeting)
				select {
				case greeted <- struct{}{}:
				default:
				}
				sc := bufio.NewScanner(c)
				for sc.Scan() && sc.Text() != "quit" {
					io.WriteString(c, strings.ToUpper(sc.Text())+"\n")
				}
			}()
		}
	}()
	return ln.Addr().String(), greeted
}

func TestTCPSendExpect(t *testing.T) {
	addr, _ := banner(t, "220 mail.test ESMTP\n")
	big, _ := banner(t, strings.Repeat("x", maxExpectScan+10)+"HELLO")
	cases := []struct {
		name         string
		addr         string
		send, expect string
		timeout      int64
		want         types.Status
		output       string
	}{
		{"banner expected", addr, "", "220 ", 5000, types.STATUS_PASSING, `TCP ` + addr + ` answered "220 "`},
		{"echo expected", addr, "ping\n", "PING", 5000, types.STATUS_PASSING, `answered "PING"`},
		{"send only", addr, "quit\n", "", 5000, types.STATUS_PASSING, "sent 5 bytes"},
		{"answer missing at the timeout", addr, "ping\n", "PONG", 300, types.STATUS_CRITICAL, `"PONG" not received (timeout after 300ms); got "220 mail.test ESMTP PING"`},
		{"answer missing when the server closes", addr, "quit\n", "221", 5000, types.STATUS_CRITICAL, `"221" not received (connection closed); got "220 mail.test ESMTP"`},
		{"answer beyond 64 KiB", big, "", "HELLO", 5000, types.STATUS_CRITICAL, `"HELLO" not received (read 64 KiB); got "xxxx`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tcpCheck(tc.addr)
			c.Tcp.Send, c.Tcp.Expect, c.TimeoutMs = tc.send, tc.expect, tc.timeout
			r := RunOnce(context.Background(), c)
			if r.Status != tc.want || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status.Name(), r.Output, tc.want.Name(), tc.output)
			}
			if r.Latency <= 0 {
				t.Fatalf("latency %v not measured", r.Latency)
			}
		})
	}
}

// TestTCPExpectCancelled: a probe waiting for an answer, ended by its
// caller, stops at once (not at its minute-long timeout) and says nothing
// about the target.
func TestTCPExpectCancelled(t *testing.T) {
	addr, greeted := banner(t, "220 mail.test ESMTP\n")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-greeted
		cancel()
	}()
	c := tcpCheck(addr)
	c.Tcp.Expect, c.TimeoutMs = "never sent", 60_000
	r := RunOnce(ctx, c)
	if r.Status != types.STATUS_UNKNOWN || !strings.Contains(r.Output, "probe ended early: context canceled") {
		t.Fatalf("got %s %q, want unknown, probe ended early", r.Status.Name(), r.Output)
	}
}
