package checks

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func httpCheck(p types.HTTPParams) types.Check {
	return types.Check{Id: "h", Kind: "http", Http: &p, IntervalMs: 1000, TimeoutMs: 5000}
}

// testMux serves the paths the http probe tests use.
func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "all good") })
	mux.HandleFunc("/down", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) })
	mux.HandleFunc("/hdr", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Probe") != "yes" || r.Host != "example.test" {
			http.Error(w, "missing header", http.StatusBadRequest)
		}
	})
	mux.HandleFunc("/post", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "post only", http.StatusMethodNotAllowed)
		}
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Repeat("a", maxBodyScan), "needle")
	})
	mux.HandleFunc("/redir", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/down", http.StatusFound) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	return mux
}

func TestHTTPProbe(t *testing.T) {
	srv := httptest.NewServer(testMux())
	defer srv.Close()
	tlsSrv := httptest.NewUnstartedServer(testMux())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	closed := httptest.NewServer(testMux())
	closed.Close()

	cases := []struct {
		name    string
		p       types.HTTPParams
		timeout int64 // ms; 0 keeps httpCheck's
		want    types.Status
		output  string
	}{
		{name: "200 passes", p: types.HTTPParams{Url: srv.URL + "/ok"}, want: types.STATUS_PASSING, output: "HTTP 200 OK"},
		{name: "503 is critical", p: types.HTTPParams{Url: srv.URL + "/down"}, want: types.STATUS_CRITICAL, output: "HTTP 503 Service Unavailable (want 200-399)"},
		{name: "expected status list", p: types.HTTPParams{Url: srv.URL + "/down", ExpectStatus: []uint32{500, 503}}, want: types.STATUS_PASSING, output: "HTTP 503 Service Unavailable"},
		{name: "status not in the list", p: types.HTTPParams{Url: srv.URL + "/ok", ExpectStatus: []uint32{201, 204}}, want: types.STATUS_CRITICAL, output: "HTTP 200 OK (want 201, 204)"},
		{name: "body match", p: types.HTTPParams{Url: srv.URL + "/ok", BodyContains: "good"}, want: types.STATUS_PASSING, output: "HTTP 200 OK"},
		{name: "body regex", p: types.HTTPParams{Url: srv.URL + "/ok", BodyRegex: `^all (good|fine)$`}, want: types.STATUS_PASSING, output: "HTTP 200 OK"},
		{name: "body regex mismatch", p: types.HTTPParams{Url: srv.URL + "/ok", BodyRegex: `^good`}, want: types.STATUS_CRITICAL, output: "HTTP 200 OK but body does not match /^good/"},
		{name: "body regex beyond 64 KiB", p: types.HTTPParams{Url: srv.URL + "/big", BodyRegex: `a+needle`}, want: types.STATUS_CRITICAL, output: "but body does not match /a+needle/ (first 64 KiB)"},
		{name: "body regex over TLS", p: types.HTTPParams{Url: tlsSrv.URL + "/ok", TlsSkipVerify: true, BodyRegex: `good$`}, want: types.STATUS_PASSING, output: "HTTP 200 OK"},
		{name: "body mismatch", p: types.HTTPParams{Url: srv.URL + "/ok", BodyContains: "bad"}, want: types.STATUS_CRITICAL, output: `HTTP 200 OK but body lacks "bad" (first 64 KiB)`},
		{name: "body match beyond 64 KiB", p: types.HTTPParams{Url: srv.URL + "/big", BodyContains: "needle"}, want: types.STATUS_CRITICAL, output: `lacks "needle"`},
		{name: "headers and host sent", p: types.HTTPParams{Url: srv.URL + "/hdr", Headers: []types.Pair{{Key: "Host", Value: "example.test"}, {Key: "X-Probe", Value: "yes"}}}, want: types.STATUS_PASSING, output: "HTTP 200 OK"},
		{name: "headers missing", p: types.HTTPParams{Url: srv.URL + "/hdr"}, want: types.STATUS_CRITICAL, output: "HTTP 400 Bad Request"},
		{name: "method", p: types.HTTPParams{Url: srv.URL + "/post", Method: http.MethodPost}, want: types.STATUS_PASSING, output: "HTTP 200 OK"},
		{name: "GET by default", p: types.HTTPParams{Url: srv.URL + "/post"}, want: types.STATUS_CRITICAL, output: "HTTP 405 Method Not Allowed"},
		{name: "redirect followed", p: types.HTTPParams{Url: srv.URL + "/redir"}, want: types.STATUS_CRITICAL, output: "HTTP 503"},
		{name: "redirect not followed", p: types.HTTPParams{Url: srv.URL + "/redir", NoFollowRedirects: true}, want: types.STATUS_PASSING, output: "HTTP 302 Found"},
		{name: "self-signed TLS verified", p: types.HTTPParams{Url: tlsSrv.URL + "/ok"}, want: types.STATUS_CRITICAL, output: "certificate"},
		{name: "self-signed TLS skipped", p: types.HTTPParams{Url: tlsSrv.URL + "/ok", TlsSkipVerify: true}, want: types.STATUS_PASSING, output: "HTTP 200 OK"},
		{name: "server gone", p: types.HTTPParams{Url: closed.URL + "/ok"}, want: types.STATUS_CRITICAL, output: "GET " + closed.URL + "/ok: dial tcp"},
		{name: "server gone refuses", p: types.HTTPParams{Url: closed.URL + "/ok"}, want: types.STATUS_CRITICAL, output: "connection refused"},
		{name: "timeout", p: types.HTTPParams{Url: srv.URL + "/slow"}, timeout: 100, want: types.STATUS_CRITICAL, output: "GET " + srv.URL + "/slow: timeout after 100ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := httpCheck(tc.p)
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

// TestHTTPProbeCancelled: a probe ended by its caller, not by its own
// timeout, says nothing about the target.
func TestHTTPProbeCancelled(t *testing.T) {
	srv := httptest.NewServer(testMux())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := RunOnce(ctx, httpCheck(types.HTTPParams{Url: srv.URL + "/ok"}))
	if r.Status != types.STATUS_UNKNOWN || !strings.Contains(r.Output, "context canceled") {
		t.Fatalf("got %s %q, want unknown, context canceled", r.Status.Name(), r.Output)
	}
}

func TestHTTPBadRegexRefused(t *testing.T) {
	_, err := New(httpCheck(types.HTTPParams{Url: "http://127.0.0.1/", BodyRegex: "("}))
	if err == nil || !strings.Contains(err.Error(), "body_regex") {
		t.Fatalf("New: err = %v, want a body_regex error", err)
	}
}

// selfSigned makes a certificate for 127.0.0.1 valid from notBefore to
// notAfter, signed by its own key.
func selfSigned(t *testing.T, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: notBefore, NotAfter: notAfter,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsServer serves testMux over TLS with a self-signed certificate valid
// from notBefore to notAfter, until the test ends.
func tlsServer(t *testing.T, notBefore, notAfter time.Time) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(testMux())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t, notBefore, notAfter)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestHTTPCertExpiry(t *testing.T) {
	now := time.Now()
	soon := tlsServer(t, now.Add(-time.Hour), now.Add(3*24*time.Hour+time.Hour))
	tomorrow := tlsServer(t, now.Add(-time.Hour), now.Add(24*time.Hour+time.Hour))
	today := tlsServer(t, now.Add(-time.Hour), now.Add(time.Hour))
	expired := tlsServer(t, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	cases := []struct {
		name   string
		url    string
		skip   bool
		days   uint32
		want   types.Status
		output string
	}{
		{"expires within the warning", soon.URL, true, 7, types.STATUS_WARNING,
			"HTTP 200 OK, certificate expires in 3 days (" + now.Add(3*24*time.Hour+time.Hour).UTC().Format(time.DateOnly) + ")"},
		{"expires after the warning", soon.URL, true, 1, types.STATUS_PASSING, "HTTP 200 OK"},
		{"no warning asked", soon.URL, true, 0, types.STATUS_PASSING, "HTTP 200 OK"},
		{"expires in a day", tomorrow.URL, true, 7, types.STATUS_WARNING, "certificate expires in 1 day ("},
		{"expires today", today.URL, true, 7, types.STATUS_WARNING, "certificate expires in less than a day ("},
		{"expired", expired.URL, true, 7, types.STATUS_CRITICAL,
			"HTTP 200 OK, certificate expired " + now.Add(-24*time.Hour).UTC().Format(time.DateOnly)},
		{"expired, verified", expired.URL, false, 7, types.STATUS_CRITICAL, "certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := RunOnce(context.Background(), httpCheck(types.HTTPParams{Url: tc.url + "/ok", TlsSkipVerify: tc.skip, CertExpiryWarnDays: tc.days}))
			if r.Status != tc.want || !strings.Contains(r.Output, tc.output) {
				t.Fatalf("got %s %q, want %s containing %q", r.Status.Name(), r.Output, tc.want.Name(), tc.output)
			}
		})
	}
}

// countingServer is a real HTTP(S) server that counts the connections it
// accepted and has open.
func countingServer(t testing.TB, tls bool) (srv *httptest.Server, opened, open func() int) {
	var mu sync.Mutex
	accepted, live := 0, 0
	srv = httptest.NewUnstartedServer(testMux())
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch st {
		case http.StateNew:
			accepted++
			live++
		case http.StateClosed, http.StateHijacked:
			live--
		}
	}
	if tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	read := func(p *int) func() int {
		return func() int { mu.Lock(); defer mu.Unlock(); return *p }
	}
	return srv, read(&accepted), read(&live)
}

// TestHTTPKeepAlive: without keep_alive every probe dials afresh; with it,
// probes share one connection (also when the body is matched, or long, or
// the answer is a failure), and closing the prober closes it.
func TestHTTPKeepAlive(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep_alive=%v", keep), func(t *testing.T) {
			srv, opened, open := countingServer(t, false)
			paths := []string{"/ok", "/down", "/big", "/ok", "/ok"}
			probers := map[string]Prober{}
			for _, path := range []string{"/ok", "/down", "/big"} {
				p := types.HTTPParams{Url: srv.URL + path, KeepAlive: keep}
				if path == "/big" {
					p.BodyContains = "aaaa" // found early: the rest of the body is left unread
				}
				pr, err := New(httpCheck(p))
				if err != nil {
					t.Fatal(err)
				}
				probers[path] = pr
			}
			for _, path := range paths {
				r := probers[path].Probe(context.Background())
				if want := path != "/down"; (r.Status == types.STATUS_PASSING) != want {
					t.Fatalf("%s: %v %q", path, r.Status, r.Output)
				}
			}
			want := len(paths)
			if keep {
				want = len(probers) // one per check, each reused
			}
			if got := opened(); got != want {
				t.Fatalf("%d probes opened %d connections, want %d", len(paths), got, want)
			}
			for _, pr := range probers {
				pr.(interface{ Close() error }).Close()
			}
			deadline := time.Now().Add(10 * time.Second)
			for open() != 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections still open after the probers closed", open())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// BenchmarkHTTPProbe: what one probe costs the observer with a fresh
// connection each time and with keep_alive, over plain HTTP and TLS.
func BenchmarkHTTPProbe(b *testing.B) {
	for _, tlsOn := range []bool{false, true} {
		for _, keep := range []bool{false, true} {
			b.Run(fmt.Sprintf("tls=%v/keep_alive=%v", tlsOn, keep), func(b *testing.B) {
				srv, opened, _ := countingServer(b, tlsOn)
				srv.Config.ErrorLog = log.New(io.Discard, "", 0)
				pr, err := New(httpCheck(types.HTTPParams{Url: srv.URL + "/ok", KeepAlive: keep, TlsSkipVerify: true}))
				if err != nil {
					b.Fatal(err)
				}
				defer pr.(interface{ Close() error }).Close()
				b.ReportAllocs()
				for b.Loop() {
					if r := pr.Probe(context.Background()); r.Status != types.STATUS_PASSING {
						b.Fatalf("%v %q", r.Status, r.Output)
					}
				}
				b.ReportMetric(float64(opened())/float64(b.N), "conns/op")
			})
		}
	}
}
