package app

import (
	"fmt"
	"strings"

	"github.com/bftmon/bftmon/app/types"
)

// checkBatchShape checks a batch without looking at state.
func checkBatchShape(b *types.ObservationBatch) error {
	if len(b.Observations) == 0 && b.UnchangedAsOfMs == 0 {
		return refuse(CodeInvalid, "observation batch is empty")
	}
	if b.UnchangedAsOfMs < 0 {
		return refuse(CodeInvalid, "observation batch vouches as of %d: negative", b.UnchangedAsOfMs)
	}
	if len(b.Observations) > MaxBatch {
		return refuse(CodeTooLarge, "observation batch has %d observations, at most %d: split it", len(b.Observations), MaxBatch)
	}
	for i := range b.Observations {
		o := &b.Observations[i]
		if o.Status < types.STATUS_PASSING || o.Status > types.STATUS_UNKNOWN {
			return refuse(CodeInvalid, "observation of %s: status %d is not passing, warning, critical or unknown",
				CheckRef(o.Service, o.Instance, o.Check), o.Status)
		}
		if len(o.Output) > MaxOutput {
			return refuse(CodeTooLarge, "observation of %s: output is %d bytes, at most %d",
				CheckRef(o.Service, o.Instance, o.Check), len(o.Output), MaxOutput)
		}
	}
	return nil
}

// MaxObservationAheadMs is how far after the block time an observation's own
// time may be; later ones are skipped (the observer's clock is wrong).
const MaxObservationAheadMs = 30_000

// observedTime is when an observation's freshness starts: the earlier of
// the block time and the observer's own time, so that a batch a proposer
// held back counts from when the observer looked, not from when it was
// included. An observation without a time (0) counts from the block.
func observedTime(o *types.Observation, blockMs int64) int64 {
	if o.ObservedAtMs > 0 && o.ObservedAtMs < blockMs {
		return o.ObservedAtMs
	}
	return blockMs
}

// observe applies an observer's batch of the given nonce. Observations of
// checks that are not registered or not in the observer's scope are skipped
// and listed in the log; if nothing in the batch applies and it vouches for
// nothing, the batch is refused. Its vouch counts as stampBatch says.
func (a *App) observe(signer []byte, nonce uint64, b *types.ObservationBatch) (string, error) {
	obs := a.byPub[string(signer)]
	if obs == nil {
		return "", refuse(CodeUnauthorized, "signer %s is not an observer", types.KeyID(signer))
	}
	if err := checkBatchShape(b); err != nil {
		return "", err
	}
	now := a.meta.TimeMs
	// Resolve every observation before writing anything.
	type item struct {
		ref string
		o   *types.Observation
	}
	items := make([]item, 0, len(b.Observations))
	seen := make(map[string]bool, len(b.Observations))
	var skipped []string
	broken := false // a report was skipped whose change the chain then lacks
	for i := range b.Observations {
		o := &b.Observations[i]
		ref := CheckRef(o.Service, o.Instance, o.Check)
		if seen[ref] {
			return "", refuse(CodeInvalid, "observation batch names %s twice", ref)
		}
		seen[ref] = true
		si := a.instance(o.Service, o.Instance)
		var c *types.Check
		if si != nil {
			c = findCheck(si, o.Check)
		}
		switch {
		case c == nil:
			skipped = appendCapped(skipped, ref+": no such check is registered")
		case !InScope(c, obs):
			skipped = appendCapped(skipped, fmt.Sprintf("%s: observer %s in %s is not in the check's scope %v", ref, obs.Name, obs.Datacenter, c.Datacenters))
		case o.ObservedAtMs > now+MaxObservationAheadMs:
			broken = true
			skipped = appendCapped(skipped, fmt.Sprintf("%s: observed at %d, %dms after the block time %d (at most %dms): check the observer's clock",
				ref, o.ObservedAtMs, o.ObservedAtMs-now, now, MaxObservationAheadMs))
		case o.ObservedAtMs != 0 && o.ObservedAtMs+c.TtlMs <= FreshAt(&a.meta):
			broken = true
			skipped = appendCapped(skipped, fmt.Sprintf("%s: observed at %d, more than the check's ttl %dms before the previous block's time %d: too old to count",
				ref, o.ObservedAtMs, c.TtlMs, FreshAt(&a.meta)))
		default:
			items = append(items, item{ref, o})
		}
	}
	if len(items) == 0 && b.UnchangedAsOfMs == 0 {
		return "", refuse(CodeUnknownCheck, "no observation in the batch applies: %s", strings.Join(skipped, "; "))
	}
	applied := 0
	for _, it := range items {
		key := recordKey(it.ref, obs.Id)
		rec := types.ObservationRecord{
			Status: it.o.Status, LatencyUs: it.o.LatencyUs, Output: it.o.Output,
			ObservedAtMs: it.o.ObservedAtMs, Height: a.meta.Height, TimeMs: observedTime(it.o, now),
		}
		var old types.ObservationRecord
		found, err := a.get(key, &old)
		if err != nil {
			return "", err
		}
		if found && it.o.ObservedAtMs < old.ObservedAtMs {
			// A batch committed late (reordered by a proposer, say): the
			// observer's newer report stands.
			skipped = appendCapped(skipped, fmt.Sprintf("%s: observed at %d, before the report already recorded (%d)", it.ref, it.o.ObservedAtMs, old.ObservedAtMs))
			continue
		}
		if it.o.Unchanged && found && old.Status == it.o.Status {
			rec.Output = old.Output
		}
		if err := a.put(key, &rec); err != nil {
			return "", err
		}
		a.dirty[it.ref] = true
		applied++
	}
	a.applied += applied
	log := fmt.Sprintf("applied %d observations", applied)
	if len(skipped) > 0 {
		log += fmt.Sprintf("; skipped %d: %s", len(b.Observations)-applied, strings.Join(skipped, "; "))
	}
	note, err := a.stampBatch(obs.Id, nonce, b, broken)
	if err != nil {
		return "", err
	}
	return log + note, nil
}

// InScope tells whether observer o watches check c.
func InScope(c *types.Check, o *types.Observer) bool {
	if len(c.Datacenters) == 0 {
		return true
	}
	for _, dc := range c.Datacenters {
		if dc == o.Datacenter {
			return true
		}
	}
	return false
}

// appendCapped keeps the first few reasons of a long list and counts the rest.
func appendCapped(reasons []string, r string) []string {
	const keep = 8
	switch {
	case len(reasons) < keep:
		return append(reasons, r)
	case len(reasons) == keep:
		return append(reasons, "and more")
	default:
		return reasons
	}
}
