package notify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
)

// Standard Webhooks 1.0 headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sign is the webhook-signature value of a delivery: "v1," and the base64
// HMAC-SHA256, under key, of "id.timestamp.body".
func Sign(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, timestamp)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Verify checks a delivery's signature header (which may carry several
// space-separated signatures) against secret ("whsec_..."), and that its
// timestamp is within tolerance of now (0: not checked).
func Verify(secret, id, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := ParseSecret(secret)
	if err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q: want unix seconds", timestamp)
	}
	if tolerance > 0 {
		if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("timestamp %s is %s from now, beyond the %s tolerance (a replay?)", time.Unix(ts, 0).UTC().Format(time.RFC3339), d.Round(time.Second), tolerance)
		}
	}
	want := Sign(key, id, ts, body)
	for _, sig := range strings.Fields(signature) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no signature in %q matches the body, id and timestamp under this secret", signature)
}

// Payload is the native JSON body of a delivery: the committed alert, with
// every observer's view at its height, the chain and the receiver's name,
// and the alert as consensus committed it: Record, its canonical protobuf
// bytes (base64 in JSON), and Digest, their SHA-256 in hex
// (types.AlertDigest). An acknowledgement signs the chain, alert id,
// receiver and digest. CheckBody checks that the JSON fields say what the
// record says, and CheckCommitted that the record is the committed one.
type Payload struct {
	api.Alert
	ChainID  string `json:"chain_id"`
	Receiver string `json:"receiver"`
	Digest   string `json:"digest"`
	Record   []byte `json:"record"`
}

// newPayload is the native body of al for receiver.
func newPayload(chainID, receiver string, al *types.Alert, names map[string]string) (Payload, error) {
	record, err := al.Marshal()
	if err != nil {
		return Payload{}, fmt.Errorf("encode alert %s: %w", al.Id, err)
	}
	return Payload{Alert: api.NewAlert(al, names), ChainID: chainID, Receiver: receiver, Digest: hex.EncodeToString(types.DigestOf(record)), Record: record}, nil
}

// nativeRequest builds the native delivery of al to r, signed if r has a key.
func nativeRequest(r *Receiver, chainID string, al *types.Alert, names map[string]string, now time.Time) (*http.Request, error) {
	// The body is built once and signed as sent.
	p, err := newPayload(chainID, r.Name, al, names)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, r.URL, strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderID, al.Id)
	ts := now.Unix()
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	if r.Key != nil {
		req.Header.Set(HeaderSignature, Sign(r.Key, al.Id, ts, body))
	}
	return req, nil
}

// amAlert is one alert of Alertmanager's API v2 (POST /api/v2/alerts).
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL"`
}

// firing tells whether a check in status st is an alert condition.
func firing(st types.Status) bool {
	return st != types.STATUS_PASSING && st != types.STATUS_NONE
}

// alertmanagerAlerts turns a committed alert into Alertmanager alerts at
// time now. A state change resolves the alert of the status it leaves (the
// same labels, endsAt its time) and fires one for the status it enters,
// whose endsAt lies a few resend intervals ahead: re-sent while it fires,
// it stays; left alone, Alertmanager resolves it. disputed and stale fire
// the same way while the check's verdict stays so, and once it is over
// (ended not zero) resolve with endsAt ended; observer_suspect fires once,
// for four resend intervals.
func alertmanagerAlerts(al *types.Alert, dc, generator string, resend time.Duration, now, ended time.Time) []amAlert {
	at := time.UnixMilli(al.TimeMs).UTC()
	labels := func(alertname, severity string) map[string]string {
		l := map[string]string{"alertname": alertname, "severity": severity, "source": "bftmon"}
		if al.Service != "" {
			l["service"], l["instance"], l["check"] = al.Service, al.Instance, al.Check
		}
		if dc != "" {
			l["datacenter"] = dc
		}
		if al.Observer != "" {
			l["observer"] = al.Observer
		}
		return l
	}
	ann := map[string]string{
		"summary":     fmt.Sprintf("%s/%s/%s is %s (was %s), agreed at height %d", al.Service, al.Instance, al.Check, al.To.Name(), al.From.Name(), al.Height),
		"alert_id":    al.Id,
		"description": viewsText(al),
	}
	if al.Kind == "observer_suspect" {
		ann["summary"] = fmt.Sprintf("observer %s disagrees with the agreed verdicts too often (height %d)", al.Observer, al.Height)
	}
	var out []amAlert
	ends := now.Add(4 * resend)
	switch al.Kind {
	case "state_change":
		if firing(al.From) {
			out = append(out, amAlert{Labels: labels("BftmonCheck", al.From.Name()), Annotations: ann, StartsAt: at, EndsAt: at, GeneratorURL: generator})
		}
		if firing(al.To) {
			out = append(out, amAlert{Labels: labels("BftmonCheck", al.To.Name()), Annotations: ann, StartsAt: at, EndsAt: ends, GeneratorURL: generator})
		}
	case "observer_suspect":
		out = append(out, amAlert{Labels: labels("BftmonObserverSuspect", "warning"), Annotations: ann, StartsAt: at, EndsAt: ends, GeneratorURL: generator})
	default: // disputed, stale
		name := "BftmonCheck" + strings.ToUpper(al.Kind[:1]) + al.Kind[1:]
		if !ended.IsZero() {
			ends = ended.UTC()
		}
		out = append(out, amAlert{Labels: labels(name, "warning"), Annotations: ann, StartsAt: at, EndsAt: ends, GeneratorURL: generator})
	}
	return out
}

func viewsText(al *types.Alert) string {
	var b strings.Builder
	for _, v := range al.Views {
		fresh := ""
		if !v.Fresh {
			fresh = " (stale)"
		}
		fmt.Fprintf(&b, "%s in %s: %s%s %s\n", v.Observer, v.Datacenter, v.Status.Name(), fresh, v.Output)
	}
	return strings.TrimSpace(b.String())
}
