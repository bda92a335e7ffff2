// Package notify delivers committed alerts to webhook receivers: every node
// follows the alerts consensus commits, keeps what it owes each receiver in
// an outbox in its local database, and delivers it — signed native JSON
// (Standard Webhooks) or Prometheus Alertmanager API v2 — with retries,
// until a delivery receipt is committed or the alert expires.
//
// In delivery mode "one" (the default) the nodes take turns: the order of
// an alert's deliverers is derived from its id and the committed observer
// set, the first delivers at once and commits a receipt, and each next node
// waits its position times the hand-off delay and delivers unless the
// receipts committed by then settle the alert (app.Query.Settled: from
// observers holding more than a third of the weight, or one carrying the
// receiver's acknowledgement, the Bftmon-Ack header). A crashed, silent or
// receipt-forging node delays a page by one hand-off; it cannot suppress
// it. In mode "all" every node delivers at once and receivers deduplicate
// on the alert id.
package notify

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/bftmon/bftmon/internal/jsonconf"
)

// Formats and modes of receivers.
const (
	FormatNative       = "native"
	FormatAlertmanager = "alertmanager"
	ModeOne            = "one"
	ModeAll            = "all"
)

// Defaults of Settings and Receiver.
const (
	DefaultHandoffDelay   = 10 * time.Second
	DefaultMaxAge         = 24 * time.Hour
	DefaultTimeout        = 10 * time.Second
	DefaultResendInterval = time.Minute
	DefaultResolvedFor    = 15 * time.Minute
	DefaultRetryBase      = time.Second
	DefaultRetryMax       = time.Minute
)

// Settings are a node's notification settings, the "notify" object of its
// config/bftmon.json. Durations are Go duration strings ("10s").
type Settings struct {
	// HandoffDelay is how long each next node in an alert's order waits
	// for the previous one's receipt (mode one). Default 10s.
	HandoffDelay string `json:"handoff_delay,omitempty"`
	// MaxAge is how long an undelivered alert is kept trying. Default 24h.
	MaxAge string `json:"max_age,omitempty"`
	// ResendInterval is how often a firing alert is sent again to an
	// Alertmanager receiver, which resolves alerts that are not. Default 1m.
	ResendInterval string `json:"resend_interval,omitempty"`
	// ResolvedFor is how long a resolved alert keeps being sent to an
	// Alertmanager receiver. Default 15m.
	ResolvedFor string `json:"resolved_for,omitempty"`
	// RetryBase and RetryMax bound the exponential backoff between failed
	// attempts (defaults 1s and 1m; jittered).
	RetryBase string `json:"retry_base,omitempty"`
	RetryMax  string `json:"retry_max,omitempty"`
	// Receivers are where alerts go.
	Receivers []ReceiverSettings `json:"receivers,omitempty"`
}

// ReceiverSettings describe one receiver.
type ReceiverSettings struct {
	// Name identifies the receiver in receipts, logs and metrics: 1..63 of
	// [a-z0-9._-]. The same receiver has the same name on every node.
	Name string `json:"name"`
	// URL is where alerts are POSTed. For Alertmanager, its base URL
	// (http://host:9093) or the full /api/v2/alerts URL.
	URL string `json:"url"`
	// Format is "native" (default) or "alertmanager".
	Format string `json:"format,omitempty"`
	// Secret signs native deliveries (Standard Webhooks): "whsec_" and the
	// base64 of 24 to 64 random bytes. Empty: unsigned.
	Secret string `json:"secret,omitempty"`
	// Kinds, Services and Tags select the alerts the receiver gets (empty:
	// all). Tags match the instance's tags at delivery time.
	Kinds    []string `json:"kinds,omitempty"`
	Services []string `json:"services,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	// Timeout cuts one delivery attempt. Default 10s.
	Timeout string `json:"timeout,omitempty"`
	// Mode is "one" (default) or "all".
	Mode string `json:"mode,omitempty"`
	// Since is where a receiver new to this node's outbox starts: "now"
	// (default: at the node's start; alerts committed before are not
	// caught up), "all" (every alert within max_age) or an RFC 3339 time.
	Since string `json:"since,omitempty"`
}

// Config is Settings checked and with defaults applied.
type Config struct {
	HandoffDelay, MaxAge, ResendInterval, ResolvedFor, RetryBase, RetryMax time.Duration
	Receivers                                                              []Receiver
}

// Receiver is a checked receiver.
type Receiver struct {
	Name, URL, Format, Mode string
	// Key is the decoded signing secret (nil: unsigned).
	Key                   []byte
	Kinds, Services, Tags []string
	Timeout               time.Duration
	// SinceAll and Since are where the receiver starts when this node's
	// outbox first sees it: every alert within MaxAge (SinceAll), the
	// alerts committed from Since, or (neither) from the node's start.
	SinceAll bool
	Since    time.Time
}

// AlertKinds are the alert kinds a receiver may select.
var AlertKinds = []string{"state_change", "disputed", "stale", "observer_suspect"}

// Check validates s and applies the defaults. raw is the settings file it
// came from (may be nil); errors name the receiver and the line of the file
// it starts on, so that an operator finds it.
func (s Settings) Check(file string, raw []byte) (Config, error) {
	cfg, pos := Config{}, jsonconf.Keys(raw)
	for _, d := range []struct {
		name string
		v    string
		def  time.Duration
		to   *time.Duration
	}{
		{"handoff_delay", s.HandoffDelay, DefaultHandoffDelay, &cfg.HandoffDelay},
		{"max_age", s.MaxAge, DefaultMaxAge, &cfg.MaxAge},
		{"resend_interval", s.ResendInterval, DefaultResendInterval, &cfg.ResendInterval},
		{"resolved_for", s.ResolvedFor, DefaultResolvedFor, &cfg.ResolvedFor},
		{"retry_base", s.RetryBase, DefaultRetryBase, &cfg.RetryBase},
		{"retry_max", s.RetryMax, DefaultRetryMax, &cfg.RetryMax},
	} {
		v, err := duration(d.v, d.def)
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", pos.Where(file, "notify."+d.name), err)
		}
		*d.to = v
	}
	seen := map[string]bool{}
	for i, rs := range s.Receivers {
		where := pos.Where(file, fmt.Sprintf("notify.receivers[%d]", i))
		if rs.Name != "" {
			where += fmt.Sprintf(" (%s)", rs.Name)
		}
		r, err := rs.check()
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", where, err)
		}
		if seen[r.Name] {
			return cfg, fmt.Errorf("%s: a receiver named %q comes earlier: names must be unique", where, r.Name)
		}
		seen[r.Name] = true
		cfg.Receivers = append(cfg.Receivers, r)
	}
	return cfg, nil
}

func (rs ReceiverSettings) check() (Receiver, error) {
	r := Receiver{Name: rs.Name, URL: rs.URL, Format: rs.Format, Mode: rs.Mode, Kinds: rs.Kinds, Services: rs.Services, Tags: rs.Tags}
	if err := validName(r.Name); err != nil {
		return r, err
	}
	u, err := url.Parse(rs.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return r, fmt.Errorf("url %q: want an absolute http:// or https:// URL", rs.URL)
	}
	if r.Format == "" {
		r.Format = FormatNative
	}
	switch r.Format {
	case FormatNative:
	case FormatAlertmanager:
		if !strings.HasSuffix(u.Path, "/api/v2/alerts") {
			r.URL = strings.TrimSuffix(rs.URL, "/") + "/api/v2/alerts"
		}
		if rs.Secret != "" {
			return r, errors.New("secret: Alertmanager deliveries are not signed; remove it")
		}
	default:
		return r, fmt.Errorf("format %q: want %q or %q", rs.Format, FormatNative, FormatAlertmanager)
	}
	if r.Mode == "" {
		r.Mode = ModeOne
	}
	if r.Mode != ModeOne && r.Mode != ModeAll {
		return r, fmt.Errorf("mode %q: want %q or %q", rs.Mode, ModeOne, ModeAll)
	}
	if rs.Secret != "" {
		if r.Key, err = ParseSecret(rs.Secret); err != nil {
			return r, fmt.Errorf("secret: %w", err)
		}
	}
	for _, k := range rs.Kinds {
		if !slices.Contains(AlertKinds, k) {
			return r, fmt.Errorf("kinds: %q: want some of %s", k, strings.Join(AlertKinds, ", "))
		}
	}
	if r.Timeout, err = duration(rs.Timeout, DefaultTimeout); err != nil {
		return r, fmt.Errorf("timeout: %w", err)
	}
	switch rs.Since {
	case "", "now":
	case "all":
		r.SinceAll = true
	default:
		if r.Since, err = time.Parse(time.RFC3339, rs.Since); err != nil {
			return r, fmt.Errorf(`since %q: want "now", "all" or an RFC 3339 time (2006-01-02T15:04:05Z)`, rs.Since)
		}
	}
	return r, nil
}

// ParseSecret decodes a Standard Webhooks secret: "whsec_" and the base64
// of 24 to 64 bytes.
func ParseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New(`want "whsec_" and base64 (Standard Webhooks), e.g. whsec_` + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0}, 24))[:8] + "...")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("after whsec_: %w", err)
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("the key is %d bytes: want 24 to 64 (e.g. head -c 32 /dev/urandom | base64)", len(key))
	}
	return key, nil
}

func duration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q: want a positive duration", s)
	}
	return d, nil
}

// validName: 1..63 of [a-z0-9._-], starting with a letter or digit (the
// rule the application applies to receipts' receiver names).
func validName(s string) error {
	if s == "" || len(s) > 63 {
		return fmt.Errorf("name %q: want 1 to 63 characters", s)
	}
	for i, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')) {
			return fmt.Errorf("name %q: use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit", s)
		}
	}
	return nil
}

// wants tells whether r takes alerts of kind about service (with the
// instance's tags).
func (r *Receiver) wants(kind, service string, tags []string) bool {
	if len(r.Kinds) > 0 && !slices.Contains(r.Kinds, kind) {
		return false
	}
	if len(r.Services) > 0 && !slices.Contains(r.Services, service) {
		return false
	}
	for _, t := range r.Tags {
		if !slices.Contains(tags, t) {
			return false
		}
	}
	return true
}
