package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bftmon/bftmon/app"
	"github.com/bftmon/bftmon/app/types"
)

// Chain is the committed state the notifier reads.
type Chain interface {
	// Read returns a reader of the last committed version.
	Read() (*app.Query, error)
	// ChainID names the chain (in native payloads).
	ChainID() string
}

// Options wire a Notifier.
type Options struct {
	Config Config
	// Dir is the directory of the outbox database.
	Dir string
	// Observer is the id of this node's observer key, which signs its
	// receipts ("": the node has none, and takes the last turn).
	Observer string
	Chain    Chain
	// Receipt commits a delivery receipt signed by the node's observer key,
	// with the receiver's acknowledgement if it gave one that verifies
	// (ack nil: none) (Receipt nil: the node commits none).
	Receipt func(ctx context.Context, alertID, receiver string, ack []byte) error
	// Name is this node's name, sent in the Bftmon-Node header of every
	// delivery.
	Name string
	// Syncing tells whether the node is catching up with the network (nil:
	// never). While it is, mode one waits: the receipts that would settle
	// its entries may be in the blocks it has yet to apply.
	Syncing func() bool
	// Silent makes the notifier deliver nothing and commit no receipt: a
	// Byzantine node's behaviour, for tests (docs/TESTING.md).
	Silent bool
	// GeneratorURL is the base URL of links back to the node (Alertmanager
	// generatorURL).
	GeneratorURL string
	Registerer   prometheus.Registerer
	Logger       *slog.Logger
	// Client sends the deliveries (default: a client of its own).
	Client *http.Client
}

// HeaderNode names the node that made a delivery.
const HeaderNode = "Bftmon-Node"

// Notifier delivers committed alerts to the configured receivers.
type Notifier struct {
	o   Options
	out *outbox
	log *slog.Logger
	m   *metrics

	mu       sync.Mutex
	entries  map[string]*entry        // by key
	wake     map[string]chan struct{} // by receiver
	disabled map[string]string        // receiver → why
	wg       sync.WaitGroup
}

// New opens the outbox and loads what it holds. Run delivers.
func New(o Options) (*Notifier, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}
	}
	out, err := openOutbox(o.Dir)
	if err != nil {
		return nil, err
	}
	n := &Notifier{o: o, out: out, log: o.Logger.With("part", "notify"), entries: map[string]*entry{},
		wake: map[string]chan struct{}{}, disabled: map[string]string{}}
	for _, r := range o.Config.Receivers {
		n.wake[r.Name] = make(chan struct{}, 1)
	}
	loaded, err := out.load()
	if err != nil {
		out.close()
		return nil, err
	}
	// A node coming back may be behind: in mode one, the receipts of the
	// nodes that took over reach it as it catches up. Its overdue entries
	// wait one hand-off for them rather than deliver a second time at once.
	notBefore := time.Now().Add(o.Config.HandoffDelay)
	for _, e := range loaded {
		r := n.receiver(e.Receiver)
		if r == nil {
			// The receiver left the configuration: nothing to deliver to.
			out.delete(e)
			continue
		}
		if r.Mode == ModeOne && !e.Delivered && e.Due.Before(notBefore) {
			e.Due = notBefore
		}
		n.entries[string(e.key())] = e
	}
	if o.Registerer != nil {
		n.m = newMetrics(o.Registerer, n.pending)
	} else {
		n.m = newMetrics(prometheus.NewRegistry(), n.pending)
	}
	if len(loaded) > 0 {
		n.log.Info("outbox loaded", "entries", len(n.entries))
	}
	return n, nil
}

func (n *Notifier) receiver(name string) *Receiver {
	for i := range n.o.Config.Receivers {
		if n.o.Config.Receivers[i].Name == name {
			return &n.o.Config.Receivers[i]
		}
	}
	return nil
}

// Order is the order in which the nodes of observers deliver alert id in
// mode one: by sha256 of the id and the observer id, so it differs per
// alert and every node computes the same.
func Order(alertID string, observers []string) []string {
	out := slices.Clone(observers)
	sum := func(o string) []byte { h := sha256.Sum256([]byte(alertID + "/" + o)); return h[:] }
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(sum(out[i]), sum(out[j])) < 0 })
	return out
}

// turns is the live observers' delivery order of an alert: observers that
// are not suspect, in Order. (Who settles an entry is another matter:
// app.Query.Settled counts every observer's receipt, suspect or not.)
func turns(q *app.Query, alertID string) ([]string, error) {
	st, err := q.Standings()
	if err != nil {
		return nil, err
	}
	var live []string
	for _, s := range st {
		if !s.Suspect {
			live = append(live, s.Observer.Id)
		}
	}
	return Order(alertID, live), nil
}

// position is this node's turn for an alert: its index in the order, or
// after everyone if it has no live observer.
func (n *Notifier) position(order []string) int {
	if i := slices.Index(order, n.o.Observer); i >= 0 {
		return i
	}
	return len(order)
}

// Committed is the commit listener: it puts the block's alerts in the
// outbox, each due at this node's turn, and takes out what the block's
// receipts settle. It does no network I/O.
func (n *Notifier) Committed(alerts []types.Alert, deliveries []types.Delivery) {
	if n.o.Silent || len(n.o.Config.Receivers) == 0 || len(alerts) == 0 && len(deliveries) == 0 {
		return
	}
	q, err := n.o.Chain.Read()
	if err != nil {
		n.log.Error("read the committed state", "err", err)
		return
	}
	now := time.Now()
	for i := range alerts {
		n.enqueue(q, &alerts[i], now, nil)
	}
	for _, d := range deliveries {
		n.receipted(q, d)
	}
}

// enqueue adds what the receivers are owed for al, due at this node's turn
// counted from start; receivers that settled says are settled are skipped.
func (n *Notifier) enqueue(q *app.Query, al *types.Alert, start time.Time, settled func(*Receiver) bool) {
	order, err := turns(q, al.Id)
	if err != nil {
		n.log.Error("read the observers' standing", "err", err)
		return
	}
	pos := n.position(order)
	bz, err := al.Marshal()
	if err != nil {
		n.log.Error("encode alert", "alert", al.Id, "err", err)
		return
	}
	var tags []string
	check := ""
	if al.Service != "" {
		check = app.CheckRef(al.Service, al.Instance, al.Check)
		if insts, err := q.Find(al.Service, app.Filter{}); err == nil {
			for _, iv := range insts {
				if iv.Instance.Id == al.Instance {
					tags = iv.Instance.Tags
				}
			}
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := range n.o.Config.Receivers {
		r := &n.o.Config.Receivers[i]
		if !r.wants(al.Kind, al.Service, tags) || n.disabled[r.Name] != "" || settled != nil && settled(r) {
			continue
		}
		k := string(entryKey(al.Id, r.Name))
		if n.entries[k] != nil {
			continue
		}
		if al.Kind == "state_change" && check != "" {
			n.supersede(r.Name, check)
		}
		due := start
		if r.Mode == ModeOne {
			due = due.Add(time.Duration(pos) * n.o.Config.HandoffDelay)
		}
		e := &entry{Alert: bz, AlertID: al.Id, Receiver: r.Name, Check: check, Committed: time.UnixMilli(al.TimeMs), Due: due}
		if err := n.out.put(e); err != nil {
			n.log.Error("outbox", "err", err)
			continue
		}
		n.entries[k] = e
		n.log.Debug("alert queued", "alert", al.Id, "receiver", r.Name, "turn", pos, "due", due)
		n.poke(r.Name)
	}
}

// supersede drops the entries of receiver about check: a newer state
// change replaces what they said (and stops their Alertmanager re-sends).
// n.mu is held.
func (n *Notifier) supersede(receiver, check string) {
	for k, e := range n.entries {
		if e.Receiver == receiver && e.Check == check {
			n.out.delete(e)
			delete(n.entries, k)
		}
	}
}

// receipted takes a committed receipt into account: this node's marks its
// entry; in mode one, the entry this node has not delivered is dropped
// once the committed receipts settle it (app.Query.Settled: more than a
// third of the observer weight, or the receiver's acknowledgement). Fewer
// receipts cancel nothing, first turn or retry.
func (n *Notifier) receipted(q *app.Query, d types.Delivery) {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := string(entryKey(d.AlertId, d.Receiver))
	e := n.entries[k]
	if e == nil {
		return
	}
	if d.Observer == n.o.Observer {
		e.Receipted = true
		n.out.put(e)
		return
	}
	r := n.receiver(d.Receiver)
	if r == nil || r.Mode != ModeOne || e.Delivered {
		return
	}
	s, err := q.Settled(d.AlertId, d.Receiver)
	if err != nil {
		n.log.Error("read the receipts", "alert", d.AlertId, "receiver", d.Receiver, "err", err)
		return
	}
	if !s.Settled {
		return
	}
	n.out.delete(e)
	delete(n.entries, k)
	n.m.settled.WithLabelValues(r.Name).Inc()
}

// poke wakes receiver's worker. n.mu may be held.
func (n *Notifier) poke(receiver string) {
	select {
	case n.wake[receiver] <- struct{}{}:
	default:
	}
}

// pending counts the entries not yet delivered, by receiver.
func (n *Notifier) pending() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]int{}
	for _, r := range n.o.Config.Receivers {
		out[r.Name] = 0
	}
	for _, e := range n.entries {
		if !e.Delivered {
			out[e.Receiver]++
		}
	}
	return out
}

// Run catches up with the alerts committed while the node was not
// following (within the maximum age), then delivers until ctx ends; it
// closes the outbox on return.
func (n *Notifier) Run(ctx context.Context) error {
	defer n.out.close()
	if !n.o.Silent && len(n.o.Config.Receivers) > 0 {
		if err := n.catchUp(); err != nil {
			n.log.Error("catch up with committed alerts", "err", err)
		}
		for _, r := range n.o.Config.Receivers {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.work(ctx, r)
			}()
		}
	}
	<-ctx.Done()
	n.wg.Wait()
	return nil
}

// catchUp queues the committed alerts of the last MaxAge that no receipt
// settles and the outbox does not hold, each due at this node's turn
// counted from its block time.
func (n *Notifier) catchUp() error {
	q, err := n.o.Chain.Read()
	if err != nil {
		return err
	}
	alerts, err := q.Alerts(0, 0)
	if err != nil {
		return err
	}
	oldest := time.Now().Add(-n.o.Config.MaxAge)
	queued := 0
	for i := len(alerts) - 1; i >= 0; i-- { // oldest first
		al := &alerts[i]
		if time.UnixMilli(al.TimeMs).Before(oldest) {
			continue
		}
		ds, err := q.Deliveries(al.Id)
		if err != nil {
			return err
		}
		before := len(n.entries)
		if err := n.enqueueUnsettled(q, al, ds); err != nil {
			return err
		}
		queued += len(n.entries) - before
	}
	if queued > 0 {
		n.log.Info("queued committed alerts not yet delivered", "entries", queued)
	}
	return nil
}

// enqueueUnsettled queues al for the receivers that this node's own
// receipt (ds lists al's) does not settle, nor, in mode one, the
// committed receipts together (app.Query.Settled).
func (n *Notifier) enqueueUnsettled(q *app.Query, al *types.Alert, ds []types.Delivery) error {
	settled := map[string]bool{}
	for _, r := range n.o.Config.Receivers {
		for _, d := range ds {
			if d.Receiver == r.Name && d.Observer == n.o.Observer {
				settled[r.Name] = true
			}
		}
		if r.Mode == ModeOne && !settled[r.Name] {
			s, err := q.Settled(al.Id, r.Name)
			if err != nil {
				return err
			}
			settled[r.Name] = s.Settled
		}
	}
	n.enqueue(q, al, time.UnixMilli(al.TimeMs), func(r *Receiver) bool { return settled[r.Name] })
	return nil
}

// work delivers receiver's entries as they fall due, one at a time.
func (n *Notifier) work(ctx context.Context, r Receiver) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		e, wait := n.next(r.Name)
		if e != nil && wait <= 0 {
			n.attempt(ctx, &r, e)
			continue
		}
		if e == nil {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-n.wake[r.Name]:
		case <-timer.C:
		}
	}
}

// next is receiver's entry due first and how long until it is due.
func (n *Notifier) next(receiver string) (*entry, time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var first *entry
	for _, e := range n.entries {
		if e.Receiver == receiver && (first == nil || e.Due.Before(first.Due)) {
			first = e
		}
	}
	if first == nil {
		return nil, 0
	}
	return first, time.Until(first.Due)
}

// drop takes e out of the outbox.
func (n *Notifier) drop(e *entry) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries[string(e.key())] == e {
		n.out.delete(e)
		delete(n.entries, string(e.key()))
	}
}

// attempt delivers e once, or decides it is no longer owed.
func (n *Notifier) attempt(ctx context.Context, r *Receiver, e *entry) {
	now := time.Now()
	log := n.log.With("alert", e.AlertID, "receiver", r.Name)
	if now.Sub(e.Committed) > n.o.Config.MaxAge && !e.Delivered {
		log.Error("alert expired undelivered", "age", now.Sub(e.Committed).Round(time.Second), "attempts", e.Attempts)
		n.m.failed.WithLabelValues(r.Name, "expired").Inc()
		n.drop(e)
		return
	}
	if e.Delivered && now.After(e.Until) {
		n.drop(e) // done re-sending
		return
	}
	var al types.Alert
	if err := al.Unmarshal(e.Alert); err != nil {
		log.Error("outbox entry does not decode; dropped", "err", err)
		n.drop(e)
		return
	}
	q, err := n.o.Chain.Read()
	if err != nil {
		n.retry(r, e, fmt.Errorf("read the committed state: %w", err))
		return
	}
	if r.Mode == ModeOne && !e.Delivered && n.o.Syncing != nil && n.o.Syncing() {
		n.mu.Lock()
		e.Due = now.Add(time.Second)
		n.mu.Unlock()
		return
	}
	if r.Mode == ModeOne && !e.Delivered {
		s, err := q.Settled(e.AlertID, r.Name)
		if err != nil {
			n.retry(r, e, err)
			return
		}
		if s.Settled {
			n.m.settled.WithLabelValues(r.Name).Inc()
			n.drop(e)
			return
		}
	}
	req, err := n.request(r, q, &al, now)
	if err == nil && n.o.Name != "" {
		req.Header.Set(HeaderNode, n.o.Name)
	}
	if err != nil {
		log.Error("build the delivery; dropped", "err", err)
		n.m.failed.WithLabelValues(r.Name, "invalid").Inc()
		n.drop(e)
		return
	}
	actx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := n.o.Client.Do(req.WithContext(actx))
	var ack string
	if err == nil {
		if r.Format == FormatNative {
			ack = resp.Header.Get(HeaderAck)
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusGone:
			n.disable(r, fmt.Sprintf("%s answered 410 Gone", r.URL))
			return
		case resp.StatusCode/100 != 2:
			err = fmt.Errorf("%s answered %s", r.URL, resp.Status)
		}
	}
	if ctx.Err() != nil {
		return // stopping: the entry stays for the next start
	}
	if err != nil {
		n.retry(r, e, err)
		return
	}
	n.delivered(r, e, &al, time.Since(start), n.checkAck(q, r, e.AlertID, ack))
}

// checkAck returns the signature of a receiver's Bftmon-Ack header if it
// verifies under the receiver's registered key, or nil: a receipt with an
// ack the app would refuse would be lost, and cost a second delivery.
func (n *Notifier) checkAck(q *app.Query, r *Receiver, alertID, header string) []byte {
	if header == "" {
		return nil
	}
	log := n.log.With("alert", alertID, "receiver", r.Name)
	rec, err := q.Receiver(r.Name)
	if err != nil {
		log.Warn("the receiver acknowledged, but has no registered key (bftmon receiver register): the receipt goes without its ack", "err", err)
		return nil
	}
	sig, err := VerifyAck(rec.PubKey, n.o.Chain.ChainID(), alertID, r.Name, header)
	if err != nil {
		log.Warn("the receiver's acknowledgement does not verify: the receipt goes without it", "err", err)
		return nil
	}
	return sig
}

// request builds the delivery of al to r.
func (n *Notifier) request(r *Receiver, q *app.Query, al *types.Alert, now time.Time) (*http.Request, error) {
	names := map[string]string{}
	for _, o := range q.Observers() {
		names[o.Id] = o.Name
	}
	if r.Format == FormatNative {
		return nativeRequest(r, n.o.Chain.ChainID(), al, names, now)
	}
	dc := ""
	if al.Service != "" {
		if insts, err := q.Find(al.Service, app.Filter{}); err == nil {
			for _, iv := range insts {
				if iv.Instance.Id == al.Instance {
					dc = iv.Instance.Datacenter
				}
			}
		}
	}
	gen := n.o.GeneratorURL + "/v1/alerts?service=" + al.Service
	body, err := json.Marshal(alertmanagerAlerts(al, dc, gen, n.o.Config.ResendInterval, now))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, r.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// delivered records a successful attempt: the first commits a receipt
// (with the receiver's verified acknowledgement ack, if any); an
// Alertmanager entry stays to be re-sent while the alert fires (or, once
// resolved, for ResolvedFor).
func (n *Notifier) delivered(r *Receiver, e *entry, al *types.Alert, took time.Duration, ack []byte) {
	first := !e.Delivered
	n.m.delivered.WithLabelValues(r.Name).Inc()
	n.m.attempt.WithLabelValues(r.Name).Observe(took.Seconds())
	if first {
		n.m.latency.WithLabelValues(r.Name).Observe(time.Since(e.Committed).Seconds())
		n.log.Info("alert delivered", "alert", e.AlertID, "receiver", r.Name, "kind", al.Kind,
			"check", e.Check, "to", al.To.Name(), "after", time.Since(e.Committed).Round(time.Millisecond), "acknowledged", ack != nil)
		if ack != nil {
			n.m.acked.WithLabelValues(r.Name).Inc()
		}
		if n.o.Receipt != nil {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.receipt(e.AlertID, r.Name, ack)
			}()
		}
	}
	resend := r.Format == FormatAlertmanager && al.Kind == "state_change"
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries[string(e.key())] != e {
		return // superseded meanwhile
	}
	if !resend {
		n.out.delete(e)
		delete(n.entries, string(e.key()))
		return
	}
	if first {
		e.Delivered, e.Attempts = true, 0
		e.Until = e.Committed.Add(n.o.Config.MaxAge)
		if !firing(al.To) {
			e.Until = time.Now().Add(n.o.Config.ResolvedFor)
		}
	}
	e.Due = time.Now().Add(n.o.Config.ResendInterval)
	n.out.put(e)
}

// receipt commits this node's receipt, retrying a few times: a receipt
// lost for good only costs a duplicate delivery by the next node.
func (n *Notifier) receipt(alertID, receiver string, ack []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	for attempt := range 6 {
		actx, acancel := context.WithTimeout(ctx, 15*time.Second)
		err = n.o.Receipt(actx, alertID, receiver, ack)
		acancel()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff(attempt, time.Second, 10*time.Second)):
			continue
		}
		break
	}
	n.log.Warn("delivery receipt not committed; another node may deliver again", "alert", alertID, "receiver", receiver, "err", err)
}

// retry schedules e's next attempt after a jittered exponential backoff.
func (n *Notifier) retry(r *Receiver, e *entry, err error) {
	n.m.retried.WithLabelValues(r.Name).Inc()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.entries[string(e.key())] != e {
		return
	}
	wait := backoff(e.Attempts, n.o.Config.RetryBase, n.o.Config.RetryMax)
	e.Attempts++
	e.Due = time.Now().Add(wait)
	n.out.put(e)
	n.log.Warn("delivery failed; retrying", "alert", e.AlertID, "receiver", r.Name, "attempt", e.Attempts, "in", wait.Round(time.Millisecond), "err", err)
}

// disable stops delivering to r for the life of the process: it asked not
// to be called again.
func (n *Notifier) disable(r *Receiver, why string) {
	n.log.Error("receiver disabled: fix its configuration and restart the node", "receiver", r.Name, "reason", why)
	n.m.failed.WithLabelValues(r.Name, "gone").Inc()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.disabled[r.Name] = why
	for k, e := range n.entries {
		if e.Receiver == r.Name {
			n.out.delete(e)
			delete(n.entries, k)
		}
	}
}

// Disabled lists the receivers disabled since start, with why.
func (n *Notifier) Disabled() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]string{}
	for k, v := range n.disabled {
		out[k] = v
	}
	return out
}

// backoff is base·2^attempt, at most max, with ±20% jitter.
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for range attempt {
		d *= 2
		if d >= max {
			d = max
			break
		}
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
