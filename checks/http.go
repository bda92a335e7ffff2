package checks

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bftmon/bftmon/app/types"
)

func init() {
	register("http", newHTTP)
	register("https", newHTTP)
}

// maxBodyScan is how much of a response body a body match looks at.
const maxBodyScan = 64 << 10

// userAgent is sent unless the check sets its own.
const userAgent = "bftmon-check"

// httpProber probes an http(s) URL.
type httpProber struct {
	url      string
	method   string
	headers  []types.Pair
	expect   []uint32
	contains string
	regex    *regexp.Regexp
	warnDays int
	timeout  time.Duration
	client   *http.Client
	reuse    bool // keep_alive: drain bodies so the connection is reused
}

func newHTTP(c types.Check) (Prober, error) {
	p := c.Http
	if p == nil {
		return nil, errors.New("http: no http parameters")
	}
	u, err := url.Parse(p.Url)
	if err != nil {
		return nil, fmt.Errorf("http: url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("http: url %q is not an absolute http(s) URL", p.Url)
	}
	method := p.Method
	if method == "" {
		method = http.MethodGet
	}
	if _, err := http.NewRequest(method, p.Url, nil); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	var re *regexp.Regexp
	if p.BodyRegex != "" {
		if re, err = regexp.Compile(p.BodyRegex); err != nil {
			return nil, fmt.Errorf("http: body_regex: %w", err)
		}
	}
	// Keep-alives are off unless the check asks for them: every probe then
	// measures a fresh connection, as a new client would see it, and a
	// removed check leaves no idle connection behind. With keep_alive one
	// connection is kept from probe to probe (closed with the check, or
	// when idle for two intervals), so a probe costs, and measures, the
	// request alone. Probes go direct, never through a proxy from the
	// environment.
	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: p.TlsSkipVerify}, //nolint:gosec // the check asks for it
		DisableKeepAlives: !p.KeepAlive,
		ForceAttemptHTTP2: true,
	}
	if p.KeepAlive {
		transport.MaxIdleConnsPerHost = 1
		transport.IdleConnTimeout = 2*time.Duration(c.IntervalMs)*time.Millisecond + timeoutOf(c)
	}
	client := &http.Client{Transport: transport}
	if p.NoFollowRedirects {
		client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return &httpProber{
		url:      p.Url,
		method:   method,
		headers:  slices.Clone(p.Headers),
		expect:   slices.Clone(p.ExpectStatus),
		contains: p.BodyContains,
		regex:    re,
		warnDays: int(p.CertExpiryWarnDays),
		timeout:  timeoutOf(c),
		client:   client,
		reuse:    p.KeepAlive,
	}, nil
}

// Probe sends the request and judges the response's status and body.
func (h *httpProber) Probe(ctx context.Context) Result {
	ctx, cancel := withTimeout(ctx, h.timeout)
	defer cancel()
	what := h.method + " " + h.url
	req, err := http.NewRequestWithContext(ctx, h.method, h.url, nil)
	if err != nil {
		return result(types.STATUS_UNKNOWN, 0, what+": "+err.Error())
	}
	for _, kv := range h.headers {
		if strings.EqualFold(kv.Key, "Host") {
			req.Host = kv.Value
			continue
		}
		req.Header.Add(kv.Key, kv.Value)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}

	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is already in what
		}
		return failure(ctx, time.Since(start), what, err)
	}
	defer func() {
		if h.reuse {
			// A connection is reused only after its body was read to the end.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyScan))
		}
		resp.Body.Close()
	}()

	var body []byte
	if h.contains != "" || h.regex != nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, maxBodyScan))
		if err != nil {
			return failure(ctx, time.Since(start), what+": read body", err)
		}
	}
	lat := time.Since(start)

	status := "HTTP " + strconv.Itoa(resp.StatusCode)
	if text := http.StatusText(resp.StatusCode); text != "" {
		status += " " + text
	}
	if !h.statusOK(resp.StatusCode) {
		return result(types.STATUS_CRITICAL, lat, status+" (want "+h.wantStatus()+")")
	}
	if h.contains != "" && !bytes.Contains(body, []byte(h.contains)) {
		return result(types.STATUS_CRITICAL, lat,
			fmt.Sprintf("%s but body lacks %q (first %d KiB)", status, h.contains, maxBodyScan>>10))
	}
	if h.regex != nil && !h.regex.Match(body) {
		return result(types.STATUS_CRITICAL, lat,
			fmt.Sprintf("%s but body does not match /%s/ (first %d KiB)", status, h.regex, maxBodyScan>>10))
	}
	if h.warnDays > 0 && resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		return h.certExpiry(lat, status, resp.TLS.PeerCertificates[0].NotAfter)
	}
	return result(types.STATUS_PASSING, lat, status)
}

// certExpiry judges the server certificate's expiry: critical once expired
// (reachable only with verification off), warning within warnDays.
func (h *httpProber) certExpiry(lat time.Duration, status string, notAfter time.Time) Result {
	left := time.Until(notAfter)
	date := notAfter.UTC().Format(time.DateOnly)
	switch {
	case left <= 0:
		return result(types.STATUS_CRITICAL, lat, fmt.Sprintf("%s, certificate expired %s", status, date))
	case left <= time.Duration(h.warnDays)*24*time.Hour:
		in := "less than a day"
		switch days := int(left / (24 * time.Hour)); days {
		case 0:
		case 1:
			in = "1 day"
		default:
			in = strconv.Itoa(days) + " days"
		}
		return result(types.STATUS_WARNING, lat, fmt.Sprintf("%s, certificate expires in %s (%s)", status, in, date))
	}
	return result(types.STATUS_PASSING, lat, status)
}

// statusOK says whether code is an acceptable response status.
func (h *httpProber) statusOK(code int) bool {
	if len(h.expect) == 0 {
		return code >= 200 && code <= 399
	}
	return slices.Contains(h.expect, uint32(code))
}

// wantStatus describes the acceptable statuses.
func (h *httpProber) wantStatus() string {
	if len(h.expect) == 0 {
		return "200-399"
	}
	codes := make([]string, len(h.expect))
	for i, c := range h.expect {
		codes[i] = strconv.FormatUint(uint64(c), 10)
	}
	return strings.Join(codes, ", ")
}

// Close drops the prober's idle connection (a check with keep_alive keeps
// one); the scheduler calls it when the check goes away.
func (h *httpProber) Close() error {
	h.client.CloseIdleConnections()
	return nil
}
