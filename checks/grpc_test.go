package checks

import (
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/bftmon/bftmon/app/types"
)

// grpcServer serves gRPC on a local port until the test ends, with the
// standard health service when withHealth.
func grpcServer(t *testing.T, withHealth bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	if withHealth {
		hs := health.NewServer()
		hs.SetServingStatus("users", healthpb.HealthCheckResponse_SERVING)
		hs.SetServingStatus("billing", healthpb.HealthCheckResponse_NOT_SERVING)
		healthpb.RegisterHealthServer(srv, hs)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func TestGRPCProbe(t *testing.T) {
	addr := grpcServer(t, true)
	bare := grpcServer(t, false)
	gone := listen(t)
	gone.Close()

	cases := []struct {
		name    string
		addr    string
		service string
		want    types.Status
		output  string
	}{
		{"server as a whole", addr, "", types.STATUS_PASSING, "grpc health " + addr + ": SERVING"},
		{"serving service", addr, "users", types.STATUS_PASSING, "users: SERVING"},
		{"not serving", addr, "billing", types.STATUS_CRITICAL, "billing: NOT_SERVING"},
		{"unknown service", addr, "ghost", types.STATUS_CRITICAL, "service unknown to the server"},
		{"no health service", bare, "", types.STATUS_CRITICAL, "does not implement grpc.health.v1"},
		{"nothing listening", gone.Addr().String(), "", types.STATUS_CRITICAL, "Unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := types.Check{Id: "g", Kind: "grpc", Grpc: &types.GRPCParams{Address: tc.addr, Service: tc.service}, IntervalMs: 1000, TimeoutMs: 5000}
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
