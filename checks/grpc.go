package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("grpc", newGRPC)
}

// grpcProber asks a server's grpc.health.v1.Health service about a
// service ("" for the server as a whole): SERVING passes, any other
// status, an unknown service, or a server without the health service is
// critical.
type grpcProber struct {
	address string
	service string
	creds   credentials.TransportCredentials
	timeout time.Duration
}

func newGRPC(c types.Check) (Prober, error) {
	p := c.Grpc
	if p == nil {
		return nil, errors.New("grpc: no grpc parameters")
	}
	if _, _, err := net.SplitHostPort(p.Address); err != nil {
		return nil, fmt.Errorf("grpc: address: %w", err)
	}
	creds := insecure.NewCredentials()
	if p.Tls {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: p.TlsSkipVerify}) //nolint:gosec // the check asks for it
	}
	return &grpcProber{address: p.Address, service: p.Service, creds: creds, timeout: timeoutOf(c)}, nil
}

// Probe connects afresh, asks once, and closes the connection.
func (g *grpcProber) Probe(ctx context.Context) Result {
	ctx, cancel := withTimeout(ctx, g.timeout)
	defer cancel()
	what := "grpc health " + g.address
	if g.service != "" {
		what += " " + g.service
	}
	start := time.Now()
	// Probes go direct, never through a proxy from the environment, and
	// the passthrough resolver dials the address as given.
	conn, err := grpc.NewClient("passthrough:///"+g.address,
		grpc.WithTransportCredentials(g.creds), grpc.WithNoProxy(), grpc.WithUserAgent(userAgent))
	if err != nil {
		return result(types.STATUS_UNKNOWN, 0, fmt.Sprintf("%s: %v", what, err))
	}
	defer conn.Close() // a close error says nothing about the target
	// Fail fast (not wait for ready): a refused or failed connection
	// attempt ends the call at once instead of at the timeout.
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: g.service}, grpc.WaitForReady(false))
	lat := time.Since(start)
	if err != nil {
		st, _ := status.FromError(err)
		switch {
		case context.Cause(ctx) != nil:
			return failure(ctx, lat, what, err)
		case st.Code() == codes.NotFound:
			return result(types.STATUS_CRITICAL, lat, what+": SERVICE_UNKNOWN (service unknown to the server)")
		case st.Code() == codes.Unimplemented:
			return result(types.STATUS_CRITICAL, lat, what+": the server does not implement grpc.health.v1")
		default:
			return result(types.STATUS_CRITICAL, lat, fmt.Sprintf("%s: %s: %s", what, st.Code(), st.Message()))
		}
	}
	s := resp.GetStatus()
	if s == healthpb.HealthCheckResponse_SERVING {
		return result(types.STATUS_PASSING, lat, what+": SERVING")
	}
	return result(types.STATUS_CRITICAL, lat, what+": "+s.String())
}
