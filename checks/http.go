package checks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("http", newHTTP)
	register("https", newHTTP)
}

type httpProbe struct {
	p       types.HTTPParams
	timeout time.Duration
	client  *http.Client
}

func newHTTP(c types.Check) (Prober, error) {
	if c.Http == nil {
		return nil, errors.New("http check without http parameters")
	}
	p := &httpProbe{p: *c.Http, timeout: timeout(c)}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: c.Http.TlsSkipVerify}, //nolint:gosec // the operator's choice per check
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     time.Duration(c.IntervalMs)*time.Millisecond + 5*time.Second,
	}
	p.client = &http.Client{Transport: tr}
	if c.Http.NoFollowRedirects {
		p.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return p, nil
}

func (p *httpProbe) Probe(ctx context.Context) Result {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	method := p.p.Method
	if method == "" {
		method = http.MethodGet
	}
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, method, p.p.Url, nil)
	if err != nil {
		return Result{Status: types.STATUS_UNKNOWN, Output: clip("bad request: " + err.Error())}
	}
	for _, h := range p.p.Headers {
		req.Header.Set(h.Key, h.Value)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		lat := time.Since(start)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Result{Status: types.STATUS_CRITICAL, Output: clip(fmt.Sprintf("timeout after %s: %v", p.timeout, err)), Latency: lat}
		}
		return Result{Status: types.STATUS_CRITICAL, Output: clip(err.Error()), Latency: lat}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	lat := time.Since(start)
	ok := resp.StatusCode >= 200 && resp.StatusCode < 400
	want := "200-399"
	if len(p.p.ExpectStatus) > 0 {
		ok = slices.Contains(p.p.ExpectStatus, uint32(resp.StatusCode))
		want = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(p.p.ExpectStatus)), ","), "[]")
	}
	if !ok {
		return Result{Status: types.STATUS_CRITICAL, Output: clip(fmt.Sprintf("HTTP %s (want %s)", resp.Status, want)), Latency: lat}
	}
	if p.p.BodyContains != "" && !strings.Contains(string(body), p.p.BodyContains) {
		return Result{Status: types.STATUS_CRITICAL, Output: clip(fmt.Sprintf("HTTP %s but body lacks %q", resp.Status, p.p.BodyContains)), Latency: lat}
	}
	return Result{Status: types.STATUS_PASSING, Output: clip(fmt.Sprintf("HTTP %s in %s", resp.Status, ms(lat))), Latency: lat}
}
