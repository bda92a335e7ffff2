package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/notify"
)

// TestDemoTarget: /health follows /fail and /heal; /ping always answers.
func TestDemoTarget(t *testing.T) {
	tg := &demoTarget{name: "t1", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	srv := httptest.NewServer(tg.handler())
	defer srv.Close()
	get := func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	post := func(path string) {
		resp, err := http.Post(srv.URL+path, "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if c := get("/health"); c != 200 {
		t.Fatalf("healthy /health: %d", c)
	}
	post("/fail")
	if c, p := get("/health"), get("/ping"); c != 503 || p != 200 {
		t.Fatalf("failing: /health %d, /ping %d; want 503, 200", c, p)
	}
	tg.set(false, "test") // what SIGUSR2 does
	if c := get("/health"); c != 200 {
		t.Fatalf("healed /health: %d", c)
	}
}

// lockedBuffer is the receiver's output, read while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWebhookReceive: a signed delivery is printed and counted per alert
// id; a badly signed one is refused with 401 and not printed.
func TestWebhookReceive(t *testing.T) {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, err := notify.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	rc := &webhookReceiver{secret: secret, tolerance: time.Minute, out: &out, log: slog.New(slog.NewTextHandler(io.Discard, nil)), byID: map[string]*receivedAlert{}}
	srv := httptest.NewServer(rc.handler())
	defer srv.Close()
	body, _ := json.Marshal(notify.Payload{Alert: api.Alert{ID: "a1", Kind: "state_change", From: "passing", To: "critical", Service: "demo", Instance: "target-dc1", Check: "http", Height: 9}, ChainID: "c", Receiver: "webhook"})
	send := func(sig string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hook", bytes.NewReader(body))
		ts := time.Now().Unix()
		req.Header.Set(notify.HeaderID, "a1")
		req.Header.Set(notify.HeaderTimestamp, strconv.FormatInt(ts, 10))
		if sig == "" {
			sig = notify.Sign(key, "a1", ts, body)
		}
		req.Header.Set(notify.HeaderSignature, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := send(""); c != http.StatusNoContent {
		t.Fatalf("signed delivery: HTTP %d", c)
	}
	if c := send(""); c != http.StatusNoContent {
		t.Fatalf("second copy: HTTP %d", c)
	}
	if c := send("v1,AAAA"); c != http.StatusUnauthorized {
		t.Fatalf("bad signature: HTTP %d, want 401", c)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "a1  state_change  demo/target-dc1/http  passing -> critical  height 9  copy 1  verified") || !strings.Contains(lines[1], "copy 2") {
		t.Fatalf("output %q: want two lines, copies 1 and 2", out.String())
	}
	resp, err := http.Get(srv.URL + "/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []receivedAlert
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || len(got) != 1 || got[0].Copies != 2 || got[0].To != "critical" {
		t.Fatalf("/alerts: %+v %v, want a1 with 2 copies", got, err)
	}
}
