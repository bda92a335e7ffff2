package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("tcp", newTCP)
}

// tcpProber checks that a TCP connection can be opened.
type tcpProber struct {
	address string
	timeout time.Duration
}

func newTCP(c types.Check) (Prober, error) {
	if c.Tcp == nil || c.Tcp.Address == "" {
		return nil, errors.New("tcp: no address")
	}
	if _, _, err := net.SplitHostPort(c.Tcp.Address); err != nil {
		return nil, fmt.Errorf("tcp: address: %w", err)
	}
	return &tcpProber{address: c.Tcp.Address, timeout: timeoutOf(c)}, nil
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
	_ = conn.Close() // nothing was sent; a close error says nothing about the target
	return result(types.STATUS_PASSING, lat, "TCP connect to "+t.address+" ok")
}
