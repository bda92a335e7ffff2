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

// Probe opens a connection; then, if the check says so, sends and reads
// the answer until the expected string shows, the server stops sending,
// maxExpectScan bytes came, or the timeout.
func (t *tcpProber) Probe(ctx context.Context) Result {
	ctx, cancel := withTimeout(ctx, t.timeout)
	defer cancel()
	what := "dial tcp " + t.address
	var d net.Dialer
	start := time.Now()
	conn, err := d.DialContext(ctx, "tcp", t.address)
	lat := time.Since(start)
	if err != nil {
		return failure(ctx, lat, what, opCause(err))
	}
	defer conn.Close() // a close error says nothing about the target
	if t.send == "" && t.expect == "" {
		return result(types.STATUS_PASSING, lat, "TCP connect to "+t.address+" ok")
	}
	what = "tcp " + t.address
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A probe ended from outside stops at once, not at its deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	if t.send != "" {
		if _, err := io.WriteString(conn, t.send); err != nil {
			return failure(ctx, time.Since(start), what+": send", opCause(err))
		}
	}
	if t.expect == "" {
		return result(types.STATUS_PASSING, time.Since(start), "TCP connect to "+t.address+" ok, sent "+strconv.Itoa(len(t.send))+" bytes")
	}
	got, why, err := readUntil(ctx, conn, []byte(t.expect))
	lat = time.Since(start)
	switch {
	case err != nil:
		return failure(ctx, lat, what+": read", opCause(err))
	case why == "":
		return result(types.STATUS_PASSING, lat, fmt.Sprintf("TCP %s answered %q", t.address, t.expect))
	}
	// What was received goes last: it is what clipping the output cuts.
	return result(types.STATUS_CRITICAL, lat, fmt.Sprintf("TCP %s: %q not received (%s); got %q", t.address, t.expect, why, clip(string(got))))
}

// readUntil reads from conn until expect shows (why is empty), or says why
// it stopped before: the server closed the connection, maxExpectScan bytes
// came, or the probe's timeout. Any other read error is returned.
func readUntil(ctx context.Context, conn net.Conn, expect []byte) (got []byte, why string, err error) {
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf[:min(len(buf), maxExpectScan-len(got))])
		got = append(got, buf[:n]...)
		switch {
		case bytes.Contains(got, expect):
			return got, "", nil
		case len(got) >= maxExpectScan:
			return got, fmt.Sprintf("read %d KiB", maxExpectScan>>10), nil
		case err == nil:
			continue
		case errors.Is(err, io.EOF):
			return got, "connection closed", nil
		}
		// The read deadline is ctx's: a timeout there ends ctx too.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			<-ctx.Done()
		}
		var timeout timeoutError
		if errors.As(context.Cause(ctx), &timeout) {
			return got, timeout.Error(), nil
		}
		return got, "", err
	}
}

// opCause is err without the network operation and addresses a
// *net.OpError wraps it in, which the probe's output already names.
func opCause(err error) error {
	var oerr *net.OpError
	if errors.As(err, &oerr) {
		return oerr.Err
	}
	return err
}
