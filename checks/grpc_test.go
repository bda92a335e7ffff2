package checks

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/bftmon/bftmon/app/types"
)

// grpcServer serves gRPC on a local port until the test ends, with the
// standard health service when withHealth: "svc" is SERVING, "bad"
// NOT_SERVING, the server as a whole ("") SERVING.
func grpcServer(t *testing.T, withHealth bool, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	if withHealth {
		hs := health.NewServer()
		hs.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
		hs.SetServingStatus("bad", healthpb.HealthCheckResponse_NOT_SERVING)
		hs.SetServingStatus("unsure", healthpb.HealthCheckResponse_UNKNOWN)
		healthpb.RegisterHealthServer(srv, hs)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// mute accepts connections on a local port and holds them open, saying
// nothing, until the test ends; each accepted connection is announced on
// the returned channel, if there is room.
func mute(t *testing.T) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 1)
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	return ln.Addr().String(), accepted
}

func TestGRPCProbe(t *testing.T) {
	addr := grpcServer(t, true)
	bare := grpcServer(t, false)
	now := time.Now()
	cert := selfSigned(t, now.Add(-time.Hour), now.Add(time.Hour))
	secure := grpcServer(t, true, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	silent, _ := mute(t)
	gone := listen(t)
	gone.Close()

	cases := []struct {
		name    string
		p       types.GRPCParams
		timeout int64 // ms; 0 for 5s
		want    types.Status
		output  string
	}{
		{"server as a whole", types.GRPCParams{Address: addr}, 0, types.STATUS_PASSING, "grpc health " + addr + ": SERVING"},
		{"serving service", types.GRPCParams{Address: addr, Service: "svc"}, 0, types.STATUS_PASSING, "grpc health " + addr + " svc: SERVING"},
		{"not serving", types.GRPCParams{Address: addr, Service: "bad"}, 0, types.STATUS_CRITICAL, "grpc health " + addr + " bad: NOT_SERVING"},
		{"status unknown", types.GRPCParams{Address: addr, Service: "unsure"}, 0, types.STATUS_CRITICAL, "unsure: UNKNOWN"},
		{"unknown service", types.GRPCParams{Address: addr, Service: "ghost"}, 0, types.STATUS_CRITICAL, "ghost: SERVICE_UNKNOWN (service unknown to the server)"},
		{"no health service", types.GRPCParams{Address: bare}, 0, types.STATUS_CRITICAL, "grpc health " + bare + ": the server does not implement grpc.health.v1"},
		{"nothing listening", types.GRPCParams{Address: gone.Addr().String()}, 0, types.STATUS_CRITICAL, "Unavailable"},
		{"nothing listening refuses", types.GRPCParams{Address: gone.Addr().String()}, 0, types.STATUS_CRITICAL, "connection refused"},
		{"server silent", types.GRPCParams{Address: silent}, 200, types.STATUS_CRITICAL, "grpc health " + silent + ": timeout after 200ms"},
		{"TLS, verification skipped", types.GRPCParams{Address: secure, Service: "svc", Tls: true, TlsSkipVerify: true}, 0, types.STATUS_PASSING, "svc: SERVING"},
		{"TLS, self-signed verified", types.GRPCParams{Address: secure, Tls: true}, 0, types.STATUS_CRITICAL, "certificate"},
		{"TLS to a plaintext server", types.GRPCParams{Address: addr, Tls: true, TlsSkipVerify: true}, 0, types.STATUS_CRITICAL, "Unavailable"},
		{"plaintext to a TLS server", types.GRPCParams{Address: secure}, 0, types.STATUS_CRITICAL, "Unavailable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			c := types.Check{Id: "g", Kind: "grpc", Grpc: &p, IntervalMs: 1000, TimeoutMs: 5000}
			if tc.timeout != 0 {
				c.TimeoutMs = tc.timeout
			}
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

// TestGRPCProbeCancelled: a probe waiting for a server, ended by its
// caller, says nothing about the target.
func TestGRPCProbeCancelled(t *testing.T) {
	silent, accepted := mute(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-accepted
		cancel()
	}()
	c := types.Check{Id: "g", Kind: "grpc", Grpc: &types.GRPCParams{Address: silent}, IntervalMs: 1000, TimeoutMs: 60_000}
	r := RunOnce(ctx, c)
	if r.Status != types.STATUS_UNKNOWN || !strings.Contains(r.Output, "probe ended early: context canceled") {
		t.Fatalf("got %s %q, want unknown, probe ended early", r.Status.Name(), r.Output)
	}
}

func TestGRPCRefused(t *testing.T) {
	for _, p := range []*types.GRPCParams{nil, {}, {Address: "nowhere"}} {
		if _, err := New(types.Check{Id: "g", Kind: "grpc", Grpc: p}); err == nil || !strings.HasPrefix(err.Error(), "check g: grpc: ") {
			t.Errorf("New(%+v): err = %v, want a grpc error", p, err)
		}
	}
}
