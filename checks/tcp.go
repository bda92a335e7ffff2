package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func init() { register("tcp", newTCP) }

type tcpProbe struct {
	addr    string
	timeout time.Duration
}

func newTCP(c types.Check) (Prober, error) {
	if c.Tcp == nil || c.Tcp.Address == "" {
		return nil, errors.New("tcp check without an address")
	}
	return &tcpProbe{addr: c.Tcp.Address, timeout: timeout(c)}, nil
}

func (p *tcpProbe) Probe(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	lat := time.Since(start)
	if err != nil {
		return Result{Status: types.STATUS_CRITICAL, Output: clip(err.Error()), Latency: lat}
	}
	conn.Close()
	return Result{Status: types.STATUS_PASSING, Output: fmt.Sprintf("TCP connect to %s in %s", p.addr, ms(lat)), Latency: lat}
}
