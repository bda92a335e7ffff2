package checks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("tcp", newTCP)
}

// tcpProber checks that a TCP connection can be opened and, optionally,
// that after sending send the server answers with expect.
type tcpProber struct {
	address string
	send    string
	expect  string
	timeout time.Duration
}

// maxExpectScan is how much of a server's answer an expectation looks at.
const maxExpectScan = 64 << 10

func newTCP(c types.Check) (Prober, error) {
	if c.Tcp == nil || c.Tcp.Address == "" {
		return nil, errors.New("tcp: no address")
	}
	if _, _, err := net.SplitHostPort(c.Tcp.Address); err != nil {
		return nil, fmt.Errorf("tcp: address: %w", err)
	}
	return &tcpProber{address: c.Tcp.Address, send: c.Tcp.Send, expect: c.Tcp.Expect, timeout: timeoutOf(c)}, nil
}

// Probe opens a connection and closes it at once.
func (t *tcpProber) Probe(ctx context.Context) Result {
	ctx, cancel := withTimeout(ctx, t.timeout)
	defer cancel()
	what := "dial tcp " + t.address
	var d net.Dialer
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", t.address)
	lat := time.Since(start)
	if err != nil {
		var oerr *net.OpError
		if errors.As(err, &oerr) {
			err = oerr.Err // the address is already in what
		}
		return failure(ctx, lat, what, err)
	}
	defer conn.Close() // a close error says nothing about the target
	if t.send == "" && t.expect == "" {
		return result(types.STATUS_PASSING, lat, "TCP connect to "+t.address+" ok")
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if t.send != "" {
		if _, err := io.WriteString(conn, t.send); err != nil {
			return failure(ctx, time.Since(start), what+": send", err)
		}
	}
	if t.expect == "" {
		return result(types.STATUS_PASSING, time.Since(start), "TCP connect to "+t.address+" ok, sent "+strconv.Itoa(len(t.send))+" bytes")
	}
	// Read until the expectation shows, the server stops, or the timeout.
	var got []byte
	buf := make([]byte, 4096)
	for len(got) < maxExpectScan {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if bytes.Contains(got, []byte(t.expect)) {
			return result(types.STATUS_PASSING, time.Since(start), fmt.Sprintf("TCP %s answered %q", t.address, t.expect))
		}
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				break
			}
			if !errors.Is(err, io.EOF) {
				return failure(ctx, time.Since(start), what+": read", err)
			}
			break
		}
	}
	return result(types.STATUS_CRITICAL, time.Since(start), fmt.Sprintf("TCP %s: want %q, got %q", t.address, t.expect, clip(string(got))))
}
