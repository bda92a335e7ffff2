package notify

import (
	"strings"
	"testing"
	"time"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/jsonconf"
)

// TestCheckSettings: bad receivers are refused naming the file, the line
// the receiver starts on, and what to fix; defaults fill the rest.
func TestCheckSettings(t *testing.T) {
	raw := `{
  "http_addr": "127.0.0.1:8500",
  "notify": {
    "handoff_delay": "3s",
    "receivers": [
      {"name": "pager", "url": "http://127.0.0.1:9000/hook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
      {
        "name": "am", "url": "http://127.0.0.1:9093", "format": "alertmanager",
        "kinds": ["state_change"]
      },
      {"name": "x", "url": "ftp://nowhere"}
    ]
  }
}`
	s := Settings{HandoffDelay: "3s", Receivers: []ReceiverSettings{
		{Name: "pager", URL: "http://127.0.0.1:9000/hook", Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		{Name: "am", URL: "http://127.0.0.1:9093", Format: "alertmanager", Kinds: []string{"state_change"}},
	}}
	pos := jsonconf.Keys([]byte(raw))
	if got := []int{pos["notify.receivers[0]"], pos["notify.receivers[1]"], pos["notify.receivers[2]"]}; got[0] != 6 || got[1] != 7 || got[2] != 11 {
		t.Fatalf("receiver lines %v, want [6 7 11]", got)
	}
	cfg, err := s.Check("bftmon.json", []byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HandoffDelay != 3*time.Second || cfg.MaxAge != DefaultMaxAge || cfg.Receivers[0].Mode != ModeOne || cfg.Receivers[0].Timeout != DefaultTimeout ||
		len(cfg.Receivers[0].Key) != 24 || cfg.Receivers[1].URL != "http://127.0.0.1:9093/api/v2/alerts" {
		t.Fatalf("config %+v", cfg)
	}
	for _, tc := range []struct {
		name string
		r    ReceiverSettings
		want string
	}{
		{"bad url", ReceiverSettings{Name: "x", URL: "ftp://nowhere"}, `bftmon.json:11: notify.receivers[2] (x): url "ftp://nowhere"`},
		{"relative url", ReceiverSettings{Name: "x", URL: "/hook"}, "want an absolute http:// or https:// URL"},
		{"secret without prefix", ReceiverSettings{Name: "x", URL: "http://h/", Secret: "c2VjcmV0"}, `secret: want "whsec_"`},
		{"short secret", ReceiverSettings{Name: "x", URL: "http://h/", Secret: "whsec_c2VjcmV0"}, "want 24 to 64"},
		{"bad base64", ReceiverSettings{Name: "x", URL: "http://h/", Secret: "whsec_!!"}, "after whsec_"},
		{"bad name", ReceiverSettings{Name: "Pager", URL: "http://h/"}, "use lower-case letters"},
		{"bad format", ReceiverSettings{Name: "x", URL: "http://h/", Format: "slack"}, `format "slack"`},
		{"bad mode", ReceiverSettings{Name: "x", URL: "http://h/", Mode: "some"}, `mode "some"`},
		{"bad kind", ReceiverSettings{Name: "x", URL: "http://h/", Kinds: []string{"fire"}}, `kinds: "fire"`},
		{"bad timeout", ReceiverSettings{Name: "x", URL: "http://h/", Timeout: "soon"}, "timeout"},
		{"signed alertmanager", ReceiverSettings{Name: "x", URL: "http://h/", Format: "alertmanager", Secret: testSecret}, "not signed"},
		{"duplicate", ReceiverSettings{Name: "pager", URL: "http://h/"}, "names must be unique"},
		{"bad since", ReceiverSettings{Name: "x", URL: "http://h/", Since: "yesterday"}, `since "yesterday": want "now", "all" or an RFC 3339 time`},
	} {
		bad := s
		bad.Receivers = append(append([]ReceiverSettings{}, s.Receivers...), tc.r)
		_, err := bad.Check("bftmon.json", []byte(raw))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct {
		since string
		all   bool
		from  time.Time
	}{{"", false, time.Time{}}, {"now", false, time.Time{}}, {"all", true, time.Time{}},
		{"2026-01-02T03:04:05Z", false, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}} {
		cfg, err := (Settings{Receivers: []ReceiverSettings{{Name: "x", URL: "http://h/", Since: tc.since}}}).Check("f", nil)
		if err != nil {
			t.Fatalf("since %q: %v", tc.since, err)
		}
		if r := cfg.Receivers[0]; r.SinceAll != tc.all || !r.Since.Equal(tc.from) {
			t.Errorf("since %q: all %v from %v, want %v %v", tc.since, r.SinceAll, r.Since, tc.all, tc.from)
		}
	}
	if _, err := (Settings{MaxAge: "-1h"}).Check("f", nil); err == nil || !strings.Contains(err.Error(), "notify.max_age") {
		t.Errorf("negative max_age: %v", err)
	}
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// TestSignVerify: the Standard Webhooks test vector, and what fails.
func TestSignVerify(t *testing.T) {
	// From the Standard Webhooks specification's examples.
	id, ts, body := "msg_p5jXN8AQM9LWM0D4loKWxJek", int64(1614265330), []byte(`{"test": 2432232314}`)
	key, err := ParseSecret(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	sig := Sign(key, id, ts, body)
	if sig != "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=" {
		t.Errorf("signature %s differs from the specification's example", sig)
	}
	now := time.Unix(ts, 0)
	if err := Verify(testSecret, id, "1614265330", "v1,bm9wZQ== "+sig, body, now, time.Minute); err != nil {
		t.Errorf("valid signature among others: %v", err)
	}
	for _, tc := range []struct {
		name                string
		id, ts, sig, secret string
		body                string
		now                 time.Time
	}{
		{"other body", id, "1614265330", sig, testSecret, `{"test": 1}`, now},
		{"other id", "msg_x", "1614265330", sig, testSecret, string(body), now},
		{"too old", id, "1614265330", sig, testSecret, string(body), now.Add(time.Hour)},
		{"bad timestamp", id, "yesterday", sig, testSecret, string(body), now},
		{"bad secret", id, "1614265330", sig, "secret", string(body), now},
	} {
		if err := Verify(tc.secret, tc.id, tc.ts, tc.sig, []byte(tc.body), tc.now, time.Minute); err == nil {
			t.Errorf("%s: verified", tc.name)
		}
	}
}

// TestOrder: every node computes the same order, a permutation that
// differs between alerts.
func TestOrder(t *testing.T) {
	obs := []string{"a1", "b2", "c3", "d4"}
	first := map[string]int{}
	for i := range 200 {
		id := strings.Repeat("0", 30) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		o := Order(id, obs)
		if strings.Join(Order(id, []string{"d4", "c3", "b2", "a1"}), ",") != strings.Join(o, ",") {
			t.Fatalf("order of %s depends on the input order", id)
		}
		if len(o) != 4 {
			t.Fatalf("order %v", o)
		}
		first[o[0]]++
	}
	for _, ob := range obs {
		if first[ob] < 20 {
			t.Errorf("%s is first for %d of 200 alerts: the load is not spread (%v)", ob, first[ob], first)
		}
	}
}

// TestBackoff doubles up to the cap, within the jitter.
func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempt int
		want    time.Duration
	}{{0, time.Second}, {1, 2 * time.Second}, {3, 8 * time.Second}, {10, time.Minute}} {
		for range 20 {
			d := backoff(tc.attempt, time.Second, time.Minute)
			if d < tc.want*8/10 || d > tc.want*12/10 {
				t.Errorf("backoff(%d) = %v, want %v ±20%%", tc.attempt, d, tc.want)
			}
		}
	}
}

// TestAlertmanagerAlerts: a state change resolves the alert of the status
// it leaves (same labels) and fires the one it enters.
func TestAlertmanagerAlerts(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	al := &types.Alert{Id: "abc", Kind: "state_change", From: types.STATUS_PASSING, To: types.STATUS_CRITICAL,
		Service: "web", Instance: "web-1", Check: "http", Height: 7, TimeMs: now.UnixMilli()}
	fire := alertmanagerAlerts(al, "dc1", "http://n/", time.Minute, now, time.Time{})
	if len(fire) != 1 || fire[0].Labels["severity"] != "critical" || fire[0].Labels["alertname"] != "BftmonCheck" ||
		fire[0].Labels["datacenter"] != "dc1" || !fire[0].EndsAt.Equal(now.Add(4*time.Minute)) || fire[0].Annotations["alert_id"] != "abc" {
		t.Fatalf("firing %+v", fire)
	}
	back := *al
	back.From, back.To, back.TimeMs = types.STATUS_CRITICAL, types.STATUS_PASSING, now.Add(time.Minute).UnixMilli()
	res := alertmanagerAlerts(&back, "dc1", "http://n/", time.Minute, now.Add(time.Minute), time.Time{})
	if len(res) != 1 || !res[0].EndsAt.Equal(time.UnixMilli(back.TimeMs).UTC()) {
		t.Fatalf("resolving %+v", res)
	}
	for k, v := range fire[0].Labels {
		if res[0].Labels[k] != v {
			t.Errorf("resolving label %s = %q, firing had %q: Alertmanager would not match them", k, res[0].Labels[k], v)
		}
	}
}
