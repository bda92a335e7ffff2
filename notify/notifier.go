package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
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
	// Tamper, if set, rewrites every alert before its delivery is built,
	// and the receiver's acknowledgement of the rewritten body goes into
	// the receipt unchecked: a Byzantine node that forges bodies under
	// real alert ids, for tests (docs/TESTING.md). The app refuses such an
	// acknowledgement (it covers another body), so it settles nothing.
	Tamper func(*types.Alert)
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
	// marks are, by receiver and scope (see scope), the newest alert
	// delivered or made moot: nothing older is sent (persisted).
	marks map[string]map[string]mark
	// newest is, by check and kind, the newest committed alert this node
	// knows of (from the catch-up and every commit since).
	newest map[string]map[string]pos
	// from is, by receiver, the block time before which its alerts are not
	// delivered (its since; zero: all), as the outbox first recorded it.
	from map[string]time.Time
	wg   sync.WaitGroup
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
	started := time.Now()
	n := &Notifier{o: o, out: out, log: o.Logger.With("part", "notify"), entries: map[string]*entry{},
		wake: map[string]chan struct{}{}, disabled: map[string]string{}, newest: map[string]map[string]pos{},
		from: map[string]time.Time{}}
	for _, r := range o.Config.Receivers {
		n.wake[r.Name] = make(chan struct{}, 1)
	}
	loaded, err := out.load()
	if err == nil {
		n.marks, err = out.marks()
	}
	var known map[string]seen
	if err == nil {
		known, err = out.seenReceivers()
	}
	if err != nil {
		out.close()
		return nil, err
	}
	for _, e := range loaded {
		if e.Kind == "" { // written before entries had kind and position
			var al types.Alert
			if al.Unmarshal(e.Alert) == nil {
				e.Kind, e.Pos = al.Kind, pos{Height: al.Height}
			}
		}
	}
	if err := n.startFrom(known, loaded, started); err != nil {
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

// startFrom sets where each receiver starts: where the outbox recorded it
// first, or for a receiver new to it, its since (default: started), which
// it records.
func (n *Notifier) startFrom(known map[string]seen, loaded []*entry, started time.Time) error {
	for _, r := range n.o.Config.Receivers {
		if s, ok := known[r.Name]; ok {
			n.from[r.Name] = s.From
			continue
		}
		var from time.Time
		switch {
		case slices.ContainsFunc(loaded, func(e *entry) bool { return e.Receiver == r.Name }):
			// An outbox from before receivers were recorded: the
			// receiver is not new.
		case r.SinceAll:
		case !r.Since.IsZero():
			from = r.Since
		default:
			from = started
		}
		if err := n.out.putSeen(r.Name, seen{From: from}); err != nil {
			return err
		}
		n.from[r.Name] = from
		if !from.IsZero() {
			n.log.Info("new receiver: alerts committed before its start are not caught up", "receiver", r.Name, "from", from)
		}
	}
	return nil
}

// scope is what r's alerts are kept in order within: the check; for
// Alertmanager, where each kind is an alert of its own (alertname), the
// check and kind.
func scope(r *Receiver, check, kind string) string {
	if r.Format == FormatAlertmanager {
		return check + " " + kind
	}
	return check
}

// noted records a committed alert of kind about check at p. n.mu is held.
func (n *Notifier) noted(check, kind string, p pos) {
	if check == "" {
		return
	}
	if n.newest[check] == nil {
		n.newest[check] = map[string]pos{}
	}
	if cur, ok := n.newest[check][kind]; !ok || cur.before(p) {
		n.newest[check][kind] = p
	}
}

// moot tells whether an alert of kind about check at p must not be sent
// to r (first time): it is not newer than r's mark, or a newer alert
// about check that r takes is committed. Alerts about no check never are.
// n.mu is held.
func (n *Notifier) moot(r *Receiver, check, kind string, p pos) bool {
	if check == "" {
		return false
	}
	if m, ok := n.marks[r.Name][scope(r, check, kind)]; ok && !m.Pos.before(p) {
		return true
	}
	for k, np := range n.newest[check] {
		if r.Format == FormatAlertmanager && k != kind || len(r.Kinds) > 0 && !slices.Contains(r.Kinds, k) {
			continue
		}
		if p.before(np) {
			return true
		}
	}
	return false
}

// obsolete tells whether entry e must go: undelivered, it is moot; being
// re-sent to Alertmanager, a newer alert of its kind took over. n.mu is
// held.
func (n *Notifier) obsolete(r *Receiver, e *entry) bool {
	if !e.Delivered {
		return n.moot(r, e.Check, e.Kind, e.Pos)
	}
	np, ok := n.newest[e.Check][e.Kind]
	return e.Check != "" && ok && e.Pos.before(np)
}

// advance raises r's mark for e's scope to e, persisted. n.mu is held.
func (n *Notifier) advance(r *Receiver, e *entry) {
	if e.Check == "" {
		return
	}
	sc := scope(r, e.Check, e.Kind)
	if m, ok := n.marks[r.Name][sc]; ok && !m.Pos.before(e.Pos) {
		return
	}
	if n.marks[r.Name] == nil {
		n.marks[r.Name] = map[string]mark{}
	}
	m := mark{Pos: e.Pos, AlertID: e.AlertID}
	n.marks[r.Name][sc] = m
	if err := n.out.putMark(r.Name, sc, m); err != nil {
		n.log.Error("outbox", "err", err)
	}
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
		n.enqueue(q, &alerts[i], uint32(i), now, nil)
	}
	for _, d := range deliveries {
		n.receipted(q, d)
	}
}

// enqueue adds what the receivers are owed for al (index idx among its
// block's alerts), due at this node's turn counted from start; receivers
// that settled says are settled are skipped, and so are those for which
// al is moot (older than what they were sent about its check, or than a
// committed alert about it) or older than their start.
func (n *Notifier) enqueue(q *app.Query, al *types.Alert, idx uint32, start time.Time, settled func(*Receiver) bool) {
	order, err := turns(q, al.Id)
	if err != nil {
		n.log.Error("read the observers' standing", "err", err)
		return
	}
	turn := n.position(order)
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
	p := pos{Height: al.Height, Index: idx}
	committed := time.UnixMilli(al.TimeMs)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.noted(check, al.Kind, p)
	for i := range n.o.Config.Receivers {
		r := &n.o.Config.Receivers[i]
		if !r.wants(al.Kind, al.Service, tags) || n.disabled[r.Name] != "" || committed.Before(n.from[r.Name]) {
			continue
		}
		k := string(entryKey(al.Id, r.Name))
		if n.entries[k] != nil {
			continue
		}
		n.supersede(r, check)
		e := &entry{Alert: bz, AlertID: al.Id, Receiver: r.Name, Check: check, Kind: al.Kind, Pos: p, Committed: committed}
		if settled != nil && settled(r) {
			n.advance(r, e) // others delivered it: nothing older goes
			continue
		}
		if n.moot(r, check, al.Kind, p) {
			continue
		}
		due := start
		if r.Mode == ModeOne {
			due = due.Add(time.Duration(turn) * n.o.Config.HandoffDelay)
		}
		e.Due = due
		if err := n.out.put(e); err != nil {
			n.log.Error("outbox", "err", err)
			continue
		}
		n.entries[k] = e
		n.log.Debug("alert queued", "alert", al.Id, "receiver", r.Name, "turn", turn, "due", due)
		n.poke(r.Name)
	}
}

// supersede drops the entries of r about check that a newer committed
// alert made obsolete: those not yet delivered, and the Alertmanager
// re-sends of an alert of the same kind. n.mu is held.
func (n *Notifier) supersede(r *Receiver, check string) {
	if check == "" {
		return
	}
	for k, e := range n.entries {
		if e.Receiver == r.Name && e.Check == check && n.obsolete(r, e) {
			n.advance(r, e)
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
	n.advance(r, e)
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
	// Index of each alert among its block's, oldest first.
	idx := make([]uint32, len(alerts))
	for i := len(alerts) - 2; i >= 0; i-- {
		if alerts[i].Height == alerts[i+1].Height {
			idx[i] = idx[i+1] + 1
		}
	}
	// Only the newest alert about a check is a candidate; what the outbox
	// holds about a check with a newer alert goes.
	n.mu.Lock()
	for i := range alerts {
		al := &alerts[i]
		if al.Service != "" {
			n.noted(app.CheckRef(al.Service, al.Instance, al.Check), al.Kind, pos{Height: al.Height, Index: idx[i]})
		}
	}
	for _, e := range n.entries {
		if r := n.receiver(e.Receiver); r != nil {
			n.supersede(r, e.Check)
		}
	}
	n.mu.Unlock()
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
		before := n.size()
		if err := n.enqueueUnsettled(q, al, idx[i], ds); err != nil {
			return err
		}
		queued += n.size() - before
	}
	if queued > 0 {
		n.log.Info("queued committed alerts not yet delivered", "entries", queued)
	}
	return nil
}

// size is how many entries the outbox holds.
func (n *Notifier) size() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.entries)
}

// enqueueUnsettled queues al for the receivers that this node's own
// receipt (ds lists al's) does not settle, nor, in mode one, the
// committed receipts together (app.Query.Settled).
func (n *Notifier) enqueueUnsettled(q *app.Query, al *types.Alert, idx uint32, ds []types.Delivery) error {
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
	n.enqueue(q, al, idx, time.UnixMilli(al.TimeMs), func(r *Receiver) bool { return settled[r.Name] })
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
	n.mu.Lock()
	gone := n.entries[string(e.key())] == e && n.obsolete(r, e)
	if gone {
		n.advance(r, e)
		n.out.delete(e)
		delete(n.entries, string(e.key()))
	}
	n.mu.Unlock()
	if gone {
		log.Debug("alert superseded by a newer one about its check")
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
			n.mu.Lock()
			n.advance(r, e)
			n.mu.Unlock()
			n.drop(e)
			return
		}
	}
	if r.Format == FormatAlertmanager && flag(al.Kind) && e.Ended.IsZero() {
		over, err := flagOver(q, &al)
		if err != nil {
			n.retry(r, e, err)
			return
		}
		if over {
			n.mu.Lock()
			e.Ended = now
			if e.Delivered {
				e.Until = now.Add(n.o.Config.ResolvedFor)
			}
			n.mu.Unlock()
		}
	}
	sent := &al
	if n.o.Tamper != nil {
		sent = new(types.Alert)
		if err := sent.Unmarshal(e.Alert); err != nil {
			sent = &al
		}
		n.o.Tamper(sent)
	}
	req, err := n.request(r, q, sent, now, e.Ended)
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
	var sig []byte
	if n.o.Tamper != nil {
		sig, _ = base64.StdEncoding.DecodeString(ack) // passed on unchecked
	} else {
		sig = n.checkAck(q, r, &al, ack)
	}
	n.delivered(r, e, &al, time.Since(start), sig)
}

// checkAck returns the signature of a receiver's Bftmon-Ack header if it
// verifies under the receiver's registered key, or nil: a receipt with an
// ack the app would refuse would be lost, and cost a second delivery.
func (n *Notifier) checkAck(q *app.Query, r *Receiver, al *types.Alert, header string) []byte {
	if header == "" {
		return nil
	}
	alertID := al.Id
	log := n.log.With("alert", alertID, "receiver", r.Name)
	rec, err := q.Receiver(r.Name)
	if err != nil {
		log.Warn("the receiver acknowledged, but has no registered key (bftmon receiver register): the receipt goes without its ack", "err", err)
		return nil
	}
	digest, err := types.AlertDigest(al)
	if err != nil {
		log.Error("encode the alert; the receipt goes without its ack", "err", err)
		return nil
	}
	sig, err := VerifyAck(rec.PubKey, n.o.Chain.ChainID(), alertID, r.Name, digest, header)
	if err != nil {
		log.Warn("the receiver's acknowledgement does not verify: the receipt goes without it", "err", err)
		return nil
	}
	return sig
}

// flag tells whether kind is an alert flagged beside a check's hard state,
// which lasts while the check's verdict says so.
func flag(kind string) bool { return kind == app.AlertDisputed || kind == app.AlertStale }

// flagOver tells whether the disputed or stale verdict al raised is over
// in the committed state q: the check's verdict is another, or became so
// again after al (another episode), or the check is gone.
func flagOver(q *app.Query, al *types.Alert) (bool, error) {
	insts, err := q.Find(al.Service, app.Filter{})
	if errors.Is(err, app.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read check %s: %w", app.CheckRef(al.Service, al.Instance, al.Check), err)
	}
	for _, iv := range insts {
		if iv.Instance.Id != al.Instance {
			continue
		}
		for _, cv := range iv.Checks {
			if cv.Check.Id == al.Check {
				return cv.State.Verdict != al.To || cv.State.VerdictHeight > al.Height, nil
			}
		}
	}
	return true, nil
}

// request builds the delivery of al to r at now; ended is when the
// verdict of a disputed or stale alert was found over (zero: not yet).
func (n *Notifier) request(r *Receiver, q *app.Query, al *types.Alert, now, ended time.Time) (*http.Request, error) {
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
	body, err := json.Marshal(alertmanagerAlerts(al, dc, gen, n.o.Config.ResendInterval, now, ended))
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
// (with the receiver's verified acknowledgement ack, if any) and raises
// the receiver's mark for the check; an Alertmanager entry of a state
// change, disputed or stale alert stays to be re-sent while the alert
// fires (or, once resolved, for ResolvedFor).
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
	resend := r.Format == FormatAlertmanager && (al.Kind == app.AlertStateChange || flag(al.Kind))
	n.mu.Lock()
	defer n.mu.Unlock()
	if first {
		n.advance(r, e)
	}
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
		if al.Kind == app.AlertStateChange && !firing(al.To) || !e.Ended.IsZero() {
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
