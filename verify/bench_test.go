package verify_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/verify"
)

// BenchmarkGet is one verified read of a service of 100 instances on a
// real one-node network (bftmon bench verify measures the same with
// passing instances, beside plain reads).
func BenchmarkGet(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	net := startNet(b)
	for i := range 100 {
		inst := types.ServiceInstance{Name: "web", Id: fmt.Sprintf("web-%03d", i), Address: "127.0.0.1", Port: 80, Datacenter: "dc1"}
		if res, err := net.client.Register(ctx, net.operator.Private, inst); err != nil || res.Code != 0 {
			b.Fatalf("register: %+v %v", res, err)
		}
	}
	h, err := verify.NewHeaders(ctx, verify.Options{RPC: []string{net.node.RPCURL()}, Genesis: net.genesis(b)})
	if err != nil {
		b.Fatal(err)
	}
	vc := verify.NewClient(net.httpAddr, h)
	b.ResetTimer()
	for b.Loop() {
		if _, err := vc.Get(ctx, "/v1/services/web"); err != nil {
			b.Fatal(err)
		}
	}
}
