package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/api/server"
)

// fakeAPI answers like the node's API, plain and proven (the design's
// {"height","code","index","answer","proofs"}), at a height the test
// moves.
type fakeAPI struct {
	mu     sync.Mutex
	height int64
}

func (f *fakeAPI) setHeight(h int64) {
	f.mu.Lock()
	f.height = h
	f.mu.Unlock()
}

// apiJSON is the JSON of v as the API writes it (v always encodes).
func apiJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func fakeInstances() []api.Instance {
	return []api.Instance{
		{Service: "web", ID: "web-1", Address: "10.0.0.1", Port: 80, Datacenter: "dc1", Tags: []string{"a<b>&c"}, Meta: map[string]string{"k": "v"},
			Status: "passing", Verdict: "passing", RegisteredHeight: 3, Checks: []api.Check{{ID: "http", Kind: "http", Status: "passing", HardStatus: "passing",
				Observers: []api.ObserverView{{Observer: "o1", Status: "passing", Fresh: true, LatencyMs: 1.25}}}}},
		{Service: "web", ID: "web-2", Address: "10.0.0.2", Port: 80, Datacenter: "dc2", Tags: []string{}, Meta: map[string]string{},
			Status: "critical", Verdict: "critical", RegisteredHeight: 4, Checks: []api.Check{{ID: "http", Kind: "http", Status: "critical", HardStatus: "critical",
				Observers: []api.ObserverView{{Observer: "o1", Status: "critical", Fresh: true, Output: "refused \u2028 é"}}}}},
	}
}

func fakeAlerts() []api.Alert {
	return []api.Alert{{ID: "00112233445566778899aabbccddeeff", Kind: "state_change", From: "passing", To: "critical", Service: "web", Instance: "web-2",
		Check: "http", Height: 7, Time: time.UnixMilli(1_700_000_000_123).UTC(), Views: []api.ObserverView{{Observer: "o1", Status: "critical"}}}}
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	h := f.height
	f.mu.Unlock()
	var answer any
	switch r.URL.Path {
	case "/v1/services/web":
		answer = fakeInstances()
	case "/v1/alerts":
		answer = fakeAlerts()
	case "/v1/status":
		answer = api.Status{Height: h}
	default:
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(server.HeaderHeight, strconv.FormatInt(h, 10))
	w.Header().Set(api.IndexHeader, "5")
	if !wantsProof(r) {
		_, _ = w.Write(apiJSON(answer))
		return
	}
	raw := apiJSON(answer)
	proven := map[string]any{"height": h, "code": 200, "index": 5, "answer": json.RawMessage(raw),
		"proofs": map[string]any{"keys": [][]byte{[]byte(r.URL.Path)}, "proof": []byte(fmt.Sprintf("proof of %s at %d", r.URL.Path, h))}}
	_, _ = w.Write(apiJSON(proven))
}

type lieGot struct {
	lie    string
	height int64
	body   []byte
}

func get(t *testing.T, h http.Handler, path string) lieGot {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	body, _ := io.ReadAll(rec.Body)
	if !json.Valid(body) {
		t.Fatalf("GET %s: the lie is not JSON: %s", path, body)
	}
	g := lieGot{lie: rec.Header().Get(HeaderTestLie), body: body}
	g.height, _ = strconv.ParseInt(rec.Header().Get(server.HeaderHeight), 10, 64)
	return g
}

// counted is how many times l told lie.
func counted(t *testing.T, l *lyingAPI, lie string) float64 {
	t.Helper()
	var m dto.Metric
	if err := l.lies.WithLabelValues(lie).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func newTestLiar(next http.Handler) (*lyingAPI, *time.Time) {
	now := time.Unix(1_700_000_000, 0)
	l := newLyingAPI(next, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	l.now = func() time.Time { return now }
	return l, &now
}

// TestJSONRoundTrip: an answer read and written again without a lie is the
// same bytes, so a lie changes nothing but what it lies about.
func TestJSONRoundTrip(t *testing.T) {
	for _, v := range []any{fakeInstances(), fakeAlerts(), []api.Instance{}, map[string][]string{"web": {"a"}, "db": {}}, api.Check{ID: "x"}} {
		b := apiJSON(v)
		tree, err := parseJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		again, err := encodeLike(b, tree)
		if err != nil || !bytes.Equal(again, b) {
			t.Errorf("round trip changed the answer (%v):\n%s\n---\n%s", err, b, again)
		}
	}
	if _, err := parseJSON([]byte(`{"a":1} x`)); err == nil {
		t.Error("trailing data accepted")
	}
}

// TestLyingAPIPlain: each plain lie in turn on a route, per LieCycle.
func TestLyingAPIPlain(t *testing.T) {
	f := &fakeAPI{height: 10}
	l, _ := newTestLiar(f)
	honest := fakeInstances()
	var seen []string
	for k := range 2 * len(LieCycle) {
		f.setHeight(int64(10 + k))
		g := get(t, l, "/v1/services/web")
		seen = append(seen, g.lie)
		var insts []api.Instance
		if err := json.Unmarshal(g.body, &insts); err != nil {
			t.Fatal(err)
		}
		switch g.lie {
		case "":
			if k%len(LieCycle) != 0 && k%len(LieCycle) != 3 && k%len(LieCycle) != 5 {
				t.Errorf("request %d honest", k)
			}
			if !bytes.Equal(g.body, apiJSON(honest)) || g.height != int64(10+k) {
				t.Errorf("request %d: honest answer changed: %s", k, g.body)
			}
		case LieForgeVerdict:
			if len(insts) != 2 || insts[0].Status != "critical" || insts[0].Verdict != "critical" || insts[0].Checks[0].Status != "critical" ||
				insts[0].Checks[0].HardStatus != "critical" || insts[0].Checks[0].Observers[0].Status != "passing" || insts[1].Status != "critical" {
				t.Errorf("forged: %+v", insts)
			}
		case LieHideInstance:
			if len(insts) != 1 || insts[0].ID != "web-2" {
				t.Errorf("hidden: %+v", insts)
			}
		case LieStaleHeight:
			if g.height != 10 {
				t.Errorf("stale height %d, want the oldest kept, 10", g.height)
			}
		default:
			t.Errorf("request %d: lie %q on a plain instance list", k, g.lie)
		}
	}
	want := []string{"", LieForgeVerdict, LieHideInstance, "", LieStaleHeight, ""}
	if !slices.Equal(seen, append(slices.Clone(want), want...)) {
		t.Errorf("lies %q, want %q twice", seen, want)
	}
	for lie, n := range map[string]float64{LieForgeVerdict: 2, LieHideInstance: 2, LieStaleHeight: 2, LieInventAlert: 0, LieOtherProofs: 0} {
		if got := counted(t, l, lie); got != n {
			t.Errorf("%s counted %v, want %v", lie, got, n)
		}
	}

	// Alerts: an invented one at the head, at slot 3.
	for k := range 4 {
		g := get(t, l, "/v1/alerts")
		var als []api.Alert
		if err := json.Unmarshal(g.body, &als); err != nil {
			t.Fatal(err)
		}
		switch k {
		case 1:
			if g.lie != LieForgeVerdict || als[0].From != "critical" || als[0].To != "passing" {
				t.Errorf("forged alert: %s %+v", g.lie, als)
			}
		case 2:
			if g.lie != LieHideInstance || len(als) != 0 {
				t.Errorf("hidden alert: %s %+v", g.lie, als)
			}
		case 3:
			if g.lie != LieInventAlert || len(als) != 2 || als[0].ID == als[1].ID || len(als[0].ID) != 32 || als[0].Service != "web" ||
				als[0].From != "critical" || als[0].To != "passing" || als[0].Height != f.height || als[1].ID != fakeAlerts()[0].ID {
				t.Errorf("invented alert: %s %+v", g.lie, als)
			}
		}
	}

	// A route that never lies is not counted.
	for range 3 {
		if g := get(t, l, "/v1/status"); g.lie != "" {
			t.Errorf("/v1/status lied: %s", g.lie)
		}
	}
}

// TestLyingAPIProven: the lies in the proven form: in the answer, or in
// height and proofs.
func TestLyingAPIProven(t *testing.T) {
	f := &fakeAPI{height: 20}
	l, _ := newTestLiar(f)
	get(t, l, "/v1/alerts?proof=1") // another request's proofs, for other-proofs
	type proven struct {
		Height int64           `json:"height"`
		Code   int             `json:"code"`
		Index  int64           `json:"index"`
		Answer json.RawMessage `json:"answer"`
		Proofs json.RawMessage `json:"proofs"`
	}
	var first proven
	for k := range len(LieCycle) {
		f.setHeight(int64(21 + k))
		g := get(t, l, "/v1/services/web?proof=1")
		var p proven
		if err := json.Unmarshal(g.body, &p); err != nil {
			t.Fatal(err)
		}
		var insts []api.Instance
		if err := json.Unmarshal(p.Answer, &insts); err != nil {
			t.Fatal(err)
		}
		if want := LieCycle[k]; g.lie != want && (want != LieInventAlert || g.lie != "") {
			t.Errorf("request %d: lie %q, want %q", k, g.lie, want)
		}
		switch g.lie {
		case "":
			if k == 0 {
				first = p
			}
			if p.Height != int64(21+k) || len(insts) != 2 || insts[0].Status != "passing" {
				t.Errorf("honest: %s", g.body)
			}
		case LieForgeVerdict:
			if p.Height != int64(21+k) || insts[0].Status != "critical" || !bytes.Contains(p.Proofs, []byte(`"keys"`)) {
				t.Errorf("forged: %s", g.body)
			}
		case LieHideInstance:
			if len(insts) != 1 {
				t.Errorf("hidden: %s", g.body)
			}
		case LieStaleHeight:
			if p.Height != first.Height || !bytes.Equal(p.Proofs, first.Proofs) || len(insts) != 2 {
				t.Errorf("stale: %s", g.body)
			}
		case LieOtherProofs:
			if p.Height != 20 || !bytes.Contains(p.Proofs, []byte(`"L3YxL2FsZXJ0cw=="`)) || len(insts) != 2 || p.Code != 200 {
				t.Errorf("other proofs: %s", g.body)
			}
		}
	}
	// The plain form keeps its own turn.
	if g := get(t, l, "/v1/services/web"); g.lie != "" {
		t.Errorf("first plain answer lied: %s", g.lie)
	}
}

// TestLyingAPIStaleAge: the stale lie prefers an answer at least
// StaleLieAge old, and keeps one that old while it keeps few.
func TestLyingAPIStaleAge(t *testing.T) {
	f := &fakeAPI{}
	l, now := newTestLiar(f)
	key := "/v1/services/web?"
	for i := range 40 { // every 10 s, a new height
		f.setHeight(int64(100 + i))
		l.record("GET /v1/services/{name}", key, lieAnswer{code: 200, header: http.Header{"Content-Type": {"application/json"},
			server.HeaderHeight: {strconv.Itoa(100 + i)}}, body: []byte("[]\n")})
		*now = now.Add(10 * time.Second)
	}
	if n := len(l.history[key].old); n != lieKeepPerRequest {
		t.Fatalf("kept %d answers", n)
	}
	rec, ok := l.stale(key, 200, false)
	if !ok || l.now().Sub(rec.at) < StaleLieAge || l.now().Sub(rec.at) > 2*StaleLieAge {
		t.Errorf("stale answer from %v ago (%v), want between %v and %v", l.now().Sub(rec.at), ok, StaleLieAge, 2*StaleLieAge)
	}
	if _, ok := l.stale(key, rec.height, false); ok {
		t.Error("a replay at no lower height")
	}
	if _, ok := l.stale(key, 200, true); ok {
		t.Error("a plain answer replayed as proven")
	}
}
