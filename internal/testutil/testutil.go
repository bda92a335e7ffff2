// Package testutil holds what the tests that start real nodes share: free
// loopback ports and waiting on a condition with a deadline (never a fixed
// sleep).
package testutil

import (
	"net"
	"testing"
	"time"
)

// FreeAddr returns a 127.0.0.1 address whose TCP port was free just now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// WaitFor polls cond until it holds, failing the test with what and cond's
// last error once timeout has passed.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond) // polling interval, not a wait for an outcome
	}
	t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
}
