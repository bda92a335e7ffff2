package server_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api/server"
	"github.com/bftmon/bftmon/internal/testutil"
)

// serveLimited serves a server with limits on a real listener, as the
// node does, and returns it and its address.
func serveLimited(t *testing.T, lim server.Limits) (*server.Server, string) {
	t.Helper()
	s := server.New(newBackend(t), server.Config{Limits: lim}, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := server.HTTPServer(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(s.Limit(ln))
	}()
	t.Cleanup(func() {
		_ = hs.Close()
		<-done
	})
	return s, ln.Addr().String()
}

// stallBody opens a connection that POSTs a transaction of MaxBody bytes,
// sends all but its last byte and stalls. The connection is closed at the
// end of the test.
func stallBody(t *testing.T, addr string, payload []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("dial %s: %v", addr, err)
		return
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		fmt.Fprintf(c, "POST /v1/txs HTTP/1.1\r\nHost: node\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", server.MaxBody)
		_, _ = c.Write(payload) // blocks until read or refused; the error of a refused one is expected
	}()
}

// TestStalledBodiesBounded is the stalled-body attack of issue 14: many
// connections each send most of a large body and stall. The bodies read at
// once never exceed the cap, the others are refused with 503, the heap
// stays within what the caps allow, and a read still answers.
func TestStalledBodiesBounded(t *testing.T) {
	for _, tc := range []struct {
		name      string
		attackers int
		lim       server.Limits
	}{
		{"count cap", 300, server.Limits{MaxConns: 400, MaxConnsPerClient: 400, MaxBodyReads: 20, MaxBodyBytes: 64 << 20, BodyWait: 200 * time.Millisecond, BodyTimeout: 5 * time.Minute}},
		{"bytes cap", 300, server.Limits{MaxConns: 400, MaxConnsPerClient: 400, MaxBodyReads: 100, MaxBodyBytes: 10 * server.MaxBody, BodyWait: 200 * time.Millisecond, BodyTimeout: 5 * time.Minute}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := serveLimited(t, tc.lim)
			// At most this many bodies of MaxBody fit at once.
			holders := min(tc.lim.MaxBodyReads, int(tc.lim.MaxBodyBytes/server.MaxBody))
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapInuse
			// Bodies held, twice for the collector's slack, and per open
			// connection its goroutines, buffers and headers.
			bound := base + 2*uint64(holders)*(server.MaxBody+bytes.MinRead) + uint64(tc.attackers)*128<<10
			var peakHeap uint64
			sample := func() {
				runtime.ReadMemStats(&ms)
				peakHeap = max(peakHeap, ms.HeapInuse)
			}

			payload := bytes.Repeat([]byte{'x'}, server.MaxBody-1)
			for range tc.attackers {
				stallBody(t, addr, payload)
			}
			testutil.WaitFor(t, "every attacker holding a read slot or refused", time.Minute, func() (bool, error) {
				sample()
				if peakHeap > bound {
					return true, nil // fails below
				}
				reading, refused := s.BodyReads(), s.BodiesRefused()
				return reading == holders && refused == int64(tc.attackers-holders),
					fmt.Errorf("%d bodies being read, %d refused, want %d and %d", reading, refused, holders, tc.attackers-holders)
			})
			sample()
			if p := s.BodyReadsPeak(); p > holders {
				t.Errorf("%d bodies were read at once, want at most %d", p, holders)
			}
			if peakHeap > bound {
				t.Errorf("heap in use reached %d MiB under the attack, want at most %d MiB (base %d MiB)", peakHeap>>20, bound>>20, base>>20)
			}
			t.Logf("heap in use: base %d MiB, peak %d MiB under %d stalled bodies (bound %d MiB)", base>>20, peakHeap>>20, tc.attackers, bound>>20)

			// A read has no body: it answers during the attack.
			resp, err := http.Get("http://" + addr + "/v1/status")
			if err != nil {
				t.Fatalf("GET /v1/status during the attack: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /v1/status during the attack: %s, want 200", resp.Status)
			}
			// A transaction is told clearly to come back later.
			resp, err = http.Post("http://"+addr+"/v1/txs", "application/octet-stream", strings.NewReader("tx"))
			if err != nil {
				t.Fatalf("POST /v1/txs during the attack: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("POST /v1/txs during the attack: %s (Retry-After %q) %s, want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"), body)
			}
		})
	}
}

// TestStalledBodyCut: a body that stops arriving is cut at BodyTimeout and
// its slot given back.
func TestStalledBodyCut(t *testing.T) {
	s, addr := serveLimited(t, server.Limits{MaxBodyReads: 1, BodyTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/txs HTTP/1.1\r\nHost: node\r\nContent-Length: 1000\r\n\r\npartial")
	testutil.WaitFor(t, "the body being read", 30*time.Second, func() (bool, error) {
		return s.BodyReadsPeak() == 1, fmt.Errorf("peak %d", s.BodyReadsPeak())
	})
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("stalled body: %s, want 400", resp.Status)
	}
	testutil.WaitFor(t, "the slot given back", 30*time.Second, func() (bool, error) {
		return s.BodyReads() == 0, fmt.Errorf("%d bodies being read", s.BodyReads())
	})
}

// TestConnectionCap: the open count never exceeds MaxConns; beyond it, a
// new client is served by closing the connection idle the longest (here
// the served clients' keep-alive connections), so idle clients never keep
// live ones waiting.
func TestConnectionCap(t *testing.T) {
	const limit, clients = 10, 30
	s, addr := serveLimited(t, server.Limits{MaxConns: limit, MaxConnsPerClient: limit})
	var mu sync.Mutex
	answered, maxOpen := 0, 0
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: node\r\n\r\n")
		go func() {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				return
			}
			resp.Body.Close()
			mu.Lock()
			answered++
			mu.Unlock()
			// The client keeps its connection open: idle, kept alive.
		}()
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		maxOpen = max(maxOpen, s.Connections())
		return answered
	}
	testutil.WaitFor(t, "every client served while the served ones stay connected", 30*time.Second, func() (bool, error) {
		return count() == clients, fmt.Errorf("%d of %d answered, %d open", count(), clients, s.Connections())
	})
	if maxOpen > limit {
		t.Errorf("%d connections were open at once, want at most %d", maxOpen, limit)
	}
	if s.ConnectionsEvicted() == 0 {
		t.Errorf("no idle connection closed: the clients beyond the cap were served how?")
	}
}

// TestConnectionsPerClient (issue 22 item 8): one client's idle
// connections (or parked blocking queries) take at most its share of the
// slots: one more is answered 429 at once, and another client, from
// another address, is still answered.
func TestConnectionsPerClient(t *testing.T) {
	const perClient = 4
	s, addr := serveLimited(t, server.Limits{MaxConns: 2 * perClient, MaxConnsPerClient: perClient})
	var idle []net.Conn
	for range perClient {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		idle = append(idle, c)
	}
	testutil.WaitFor(t, "the idle connections accepted", 10*time.Second, func() (bool, error) {
		return s.Connections() == perClient, fmt.Errorf("%d open", s.Connections())
	})
	for i := range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("connection %d over the client's cap: %v %v, want 429", perClient+i+1, resp, err)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), "holds 4 connections") {
			t.Errorf("429 body %q does not say why", body)
		}
	}
	if n := s.ConnectionsRefused(); n != 2 {
		t.Errorf("%d connections refused, want 2", n)
	}
	// Another client, from another loopback address, is served.
	other := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: (&net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	resp, err := other.Get("http://" + addr + "/v1/status")
	if err != nil {
		t.Fatalf("another client at the first one's cap: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("another client's /v1/status: HTTP %d", resp.StatusCode)
	}
	// Closing one of the first client's connections frees its slot.
	idle[0].Close()
	testutil.WaitFor(t, "a closed connection's slot freed", 10*time.Second, func() (bool, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false, err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /v1/status HTTP/1.1\r\nHost: node\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode != http.StatusTooManyRequests, fmt.Errorf("HTTP %d", resp.StatusCode)
	})
}

// dialFrom opens a connection to addr from the loopback address ip.
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends one GET on c and reads the answer.
func roundTrip(t *testing.T, c net.Conn, path string) (*http.Response, string) {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: node\r\n\r\n", path)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestFullNodeStillAnswersStatus: when every connection slot is taken
// (issue 22 item 8: 10,000 idle TCP connections made 19 of 25 GET
// /v1/status fail), idle connections are closed first to make room for a
// new client, and when none is idle (parked blocking queries hold every
// slot) a reserved connection still answers GET /v1/status, and only the
// status routes.
func TestFullNodeStillAnswersStatus(t *testing.T) {
	const slots = 6
	s, addr := serveLimited(t, server.Limits{MaxConns: slots, MaxConnsPerClient: slots, ReservedConns: 2})
	first := dialFrom(t, "127.0.0.1", addr)
	resp, _ := roundTrip(t, first, "/v1/services")
	first.Close()
	idx := resp.Header.Get("X-Bftmon-Index")
	if idx == "" {
		t.Fatalf("/v1/services: no index to block on")
	}
	// Idle connections from several clients take every slot.
	var silent []net.Conn
	for i := range slots {
		silent = append(silent, dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i), addr))
	}
	testutil.WaitFor(t, "the idle connections accepted", 10*time.Second, func() (bool, error) {
		return s.Connections() == slots, fmt.Errorf("%d open", s.Connections())
	})
	var body string
	// A new client is served: once they have been silent for
	// NewConnGrace, the longest idle connection makes room (before, the
	// reserved connection answers the status).
	testutil.WaitFor(t, "a silent connection closed for a new client", 10*time.Second, func() (bool, error) {
		resp, body := roundTrip(t, dialFrom(t, "127.0.0.1", addr), "/v1/status")
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "height") {
			t.Fatalf("/v1/status with every slot idle: %d %s", resp.StatusCode, body)
		}
		return s.ConnectionsEvicted() >= 1, fmt.Errorf("%d closed", s.ConnectionsEvicted())
	})
	// Parked blocking queries take every slot: none idle.
	for _, c := range silent {
		c.Close()
	}
	testutil.WaitFor(t, "the silent connections gone", 10*time.Second, func() (bool, error) {
		return s.Connections() <= 1, fmt.Errorf("%d open", s.Connections())
	})
	for i := range slots {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 20+i), addr)
		fmt.Fprintf(c, "GET /v1/services?index=%s&wait=5m HTTP/1.1\r\nHost: node\r\n\r\n", idx)
	}
	testutil.WaitFor(t, "every slot held by a parked query", 10*time.Second, func() (bool, error) {
		return s.Parked() == slots && s.Connections() == slots, fmt.Errorf("%d parked, %d open", s.Parked(), s.Connections())
	})
	evicted := s.ConnectionsEvicted()
	resp, body = roundTrip(t, dialFrom(t, "127.0.0.1", addr), "/v1/status")
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "height") || !resp.Close {
		t.Fatalf("/v1/status on a reserved connection: %d close=%v %s, want the status and the connection closed", resp.StatusCode, resp.Close, body)
	}
	resp, body = roundTrip(t, dialFrom(t, "127.0.0.1", addr), "/v1/services")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "answers only GET /v1/status") {
		t.Errorf("/v1/services on a reserved connection: %d %s, want 503 saying what it answers", resp.StatusCode, body)
	}
	if s.ConnectionsEvicted() != evicted || s.Parked() != slots {
		t.Errorf("a parked query was closed (%d evicted, %d parked): only idle connections may be", s.ConnectionsEvicted()-evicted, s.Parked())
	}
}
