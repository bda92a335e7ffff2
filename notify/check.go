package notify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/verify"
)

// CheckBody checks that a native delivery's body says what the alert
// record it carries says, and returns that record and its digest (what the
// receiver's acknowledgement signs). The record must be canonical protobuf
// bytes (those the app stores), the digest their SHA-256, and every JSON
// field of the alert equal to the record's. It does not tell whether the
// record is the committed one: any node can build a self-consistent body.
// CheckCommitted does, against the validators' signatures.
func CheckBody(body []byte) (types.Alert, []byte, error) {
	var p Payload
	if err := json.Unmarshal(body, &p); err != nil {
		return types.Alert{}, nil, fmt.Errorf("the body is not a native delivery (JSON with record and digest): %w", err)
	}
	if len(p.Record) == 0 {
		return types.Alert{}, nil, errors.New(`the body has no "record": it is not a native delivery of this bftmon version`)
	}
	var al types.Alert
	if err := al.Unmarshal(p.Record); err != nil {
		return types.Alert{}, nil, fmt.Errorf("the body's record is no alert: %w", err)
	}
	if again, err := al.Marshal(); err != nil || !bytes.Equal(again, p.Record) {
		return types.Alert{}, nil, errors.New("the body's record is not in canonical form, so its digest is not the committed alert's")
	}
	digest := types.DigestOf(p.Record)
	if got := hex.EncodeToString(digest); got != p.Digest {
		return types.Alert{}, nil, fmt.Errorf("the body's digest %q is not the SHA-256 of its record (%s)", p.Digest, got)
	}
	p.Alert.Deliveries = nil
	if d := sameAlert(p.Alert, &al); d != "" {
		return types.Alert{}, nil, fmt.Errorf("the body's alert differs from its record: %s", d)
	}
	return al, digest, nil
}

// sameAlert compares an alert's API form with a record, the observers'
// names taken from the API form (the record has ids only), and says where
// they differ ("" if nowhere).
func sameAlert(a api.Alert, al *types.Alert) string {
	names := map[string]string{}
	for _, v := range a.Views {
		names[v.Observer] = v.Name
	}
	a.Deliveries = nil
	got, _ := json.Marshal(a)
	want, _ := json.Marshal(api.NewAlert(al, names))
	if bytes.Equal(got, want) {
		return ""
	}
	return fmt.Sprintf("%s, want %s", got, want)
}

// CheckCommitted checks, with verified reads through c (answers proven
// against headers the validators signed), that the alert with al's id is
// committed and is al. Together with CheckBody it tells a receiver that a
// body is the one consensus committed, whichever node delivered it: a body
// a faulty node forged under a real alert id fails here.
func CheckCommitted(ctx context.Context, c *verify.Client, al *types.Alert) error {
	q := url.Values{"limit": {"1000"}, "kind": {al.Kind}}
	if al.Service != "" {
		q.Set("service", al.Service)
	}
	res, err := c.Get(ctx, "/v1/alerts?"+q.Encode())
	if err != nil {
		return fmt.Errorf("read the committed alerts (verified): %w", err)
	}
	var list []api.Alert
	if err := json.Unmarshal(res.Body, &list); err != nil {
		return fmt.Errorf("decode the verified alerts at height %d: %w", res.Height, err)
	}
	for _, a := range list {
		if a.ID != al.Id {
			continue
		}
		if d := sameAlert(a, al); d != "" {
			return fmt.Errorf("alert %s as committed (verified at height %d) differs from the body's record: %s: the body is forged", al.Id, res.Height, d)
		}
		return nil
	}
	return fmt.Errorf("alert %s (%s, service %q) is not among the committed alerts verified at height %d: the body is forged, or the alert is older than the last 1000 of its kind", al.Id, al.Kind, al.Service, res.Height)
}
