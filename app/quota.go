package app

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/bftmon/bftmon/app/types"
)

// The quotas of every operator when genesis sets none (issue 22: one
// operator could write 15 values of 512 KiB a block, about 1.2 TiB of
// replicated state a day).
const (
	DefaultQuotaKVBytes   = 64 << 20
	DefaultQuotaKVKeys    = 10_000
	DefaultQuotaInstances = 100_000
)

// GenesisQuotas is genesis's optional "quotas": what each operator may keep
// in the replicated state. An absent field takes its default; 0 allows
// nothing of that kind (an operator that only registers instances may be
// given kv_keys 0). The same quotas bind every operator.
type GenesisQuotas struct {
	// KVBytes bounds the sum of the key and value lengths of the
	// key/value entries an operator wrote (default DefaultQuotaKVBytes).
	KVBytes *uint64 `json:"kv_bytes"`
	// KVKeys bounds the number of those entries (default DefaultQuotaKVKeys).
	KVKeys *uint64 `json:"kv_keys"`
	// Instances bounds the service instances an operator registered
	// (default DefaultQuotaInstances).
	Instances *uint64 `json:"instances"`
}

// Resolve returns the quotas genesis sets, defaults filled in (q may be nil).
func (q *GenesisQuotas) Resolve() types.Quotas {
	out := types.Quotas{KvBytes: DefaultQuotaKVBytes, KvKeys: DefaultQuotaKVKeys, Instances: DefaultQuotaInstances}
	if q == nil {
		return out
	}
	for _, f := range []struct {
		v   *uint64
		dst *uint64
	}{{q.KVBytes, &out.KvBytes}, {q.KVKeys, &out.KvKeys}, {q.Instances, &out.Instances}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	return out
}

// encodeQuotas is the stored form of the quotas (m/quotas): kv_bytes,
// kv_keys and instances, 8 bytes big-endian each, never empty even when all
// are 0.
func encodeQuotas(q types.Quotas) []byte {
	b := binary.BigEndian.AppendUint64(nil, q.KvBytes)
	b = binary.BigEndian.AppendUint64(b, q.KvKeys)
	return binary.BigEndian.AppendUint64(b, q.Instances)
}

// loadQuotas reads the stored quotas; a state without them (before
// InitChain) has the defaults.
func (a *App) loadQuotas() error {
	bz, err := a.store.Get(keyQuotas)
	switch {
	case err != nil:
		return fmt.Errorf("load quotas: %w", err)
	case bz == nil:
		a.quotas = (*GenesisQuotas)(nil).Resolve()
	case len(bz) != 24:
		return fmt.Errorf("load quotas: %d bytes stored at %s, want 24: the state is damaged", len(bz), keyQuotas)
	default:
		a.quotas = types.Quotas{KvBytes: binary.BigEndian.Uint64(bz), KvKeys: binary.BigEndian.Uint64(bz[8:]), Instances: binary.BigEndian.Uint64(bz[16:])}
	}
	return nil
}

// usageDelta is a change of one operator's usage.
type usageDelta struct{ kvBytes, kvKeys, instances int64 }

// entryCharge is what a key/value entry counts against its writer's
// kv_bytes quota: its key and value lengths.
func entryCharge(e *types.KVEntry) int64 { return int64(len(e.Key) + len(e.Value)) }

// Usage returns the stored usage of the operator with public key pub.
func (a *App) Usage(pub []byte) (types.Usage, error) {
	var u types.Usage
	_, err := a.get(usageKey(fmt.Sprintf("%x", pub)), &u)
	return u, err
}

// Quotas are the quotas genesis set for every operator.
func (a *App) Quotas() types.Quotas { return a.quotas }

// checkQuota refuses a change d of the usage of operator pub that would take
// a part of it above its quota. A part that does not grow is never refused,
// so an operator above a quota can always free usage.
func (a *App) checkQuota(pub []byte, d usageDelta) error {
	if d.kvBytes <= 0 && d.kvKeys <= 0 && d.instances <= 0 {
		return nil
	}
	u, err := a.Usage(pub)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%x", pub)
	if op := a.operators[string(pub)]; op != nil {
		name = op.Name
	}
	for _, p := range []struct {
		field, what string
		delta       int64
		used, limit uint64
		free        string
	}{
		{"kv_bytes", "bytes of key/value (keys plus values) it wrote", d.kvBytes, u.KvBytes, a.quotas.KvBytes, "delete or shorten keys it wrote"},
		{"kv_keys", "key/value keys it wrote", d.kvKeys, u.KvKeys, a.quotas.KvKeys, "delete keys it wrote"},
		{"instances", "service instances it registered", d.instances, u.Instances, a.quotas.Instances, "deregister instances it registered"},
	} {
		if p.delta <= 0 {
			continue
		}
		if after := p.used + uint64(p.delta); after > p.limit {
			return refuse(CodeQuota, "operator %s is over its %s quota: this would make %d %s, and the quota is %d (now %d): %s, "+
				"or raise quotas.%s in the genesis app_state (the same for every node)",
				name, p.field, after, p.what, p.limit, p.used, p.free, p.field)
		}
	}
	return nil
}

// addUsage applies usage changes, in operator order; a usage that falls to
// zero is deleted, so the state holds usage only of operators that keep
// something.
func (a *App) addUsage(deltas map[string]*usageDelta) error {
	ops := make([]string, 0, len(deltas))
	for op := range deltas {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		d := deltas[op]
		if *d == (usageDelta{}) {
			continue
		}
		u, err := a.Usage([]byte(op))
		if err != nil {
			return err
		}
		u.KvBytes = addSigned(u.KvBytes, d.kvBytes)
		u.KvKeys = addSigned(u.KvKeys, d.kvKeys)
		u.Instances = addSigned(u.Instances, d.instances)
		k := usageKey(fmt.Sprintf("%x", op))
		if u == (types.Usage{}) {
			err = a.store.Delete(k)
		} else {
			err = a.put(k, &u)
		}
		if err != nil {
			return fmt.Errorf("usage of operator %x: %w", op, err)
		}
	}
	return nil
}

// addSigned adds d to u; usage never goes below zero (entries written before
// writers were recorded carry no charge).
func addSigned(u uint64, d int64) uint64 {
	if d < 0 && uint64(-d) > u {
		return 0
	}
	return uint64(int64(u) + d)
}

// addDelta adds to the usage change of operator pub in deltas (no
// operator: nothing).
func addDelta(deltas map[string]*usageDelta, pub []byte, d usageDelta) {
	if len(pub) == 0 {
		return
	}
	cur := deltas[string(pub)]
	if cur == nil {
		cur = &usageDelta{}
		deltas[string(pub)] = cur
	}
	cur.kvBytes += d.kvBytes
	cur.kvKeys += d.kvKeys
	cur.instances += d.instances
}

// RecomputeUsage recomputes every operator's usage from what the state
// holds (for tests and audits): key/value entries by writer, instances by
// owner, keyed by the operator's public key.
func RecomputeUsage(r Reader) (map[string]types.Usage, error) {
	out := map[string]types.Usage{}
	entries, err := scan[types.KVEntry](r, prefixKV)
	if err != nil {
		return nil, err
	}
	for i := range entries {
		if len(entries[i].Writer) == 0 {
			continue
		}
		u := out[string(entries[i].Writer)]
		u.KvBytes += uint64(entryCharge(&entries[i]))
		u.KvKeys++
		out[string(entries[i].Writer)] = u
	}
	insts, err := scan[types.ServiceInstance](r, prefixService)
	if err != nil {
		return nil, err
	}
	for i := range insts {
		if len(insts[i].Owner) == 0 {
			continue
		}
		u := out[string(insts[i].Owner)]
		u.Instances++
		out[string(insts[i].Owner)] = u
	}
	return out, nil
}

// StoredUsage reads every operator's stored usage, keyed by public key.
func StoredUsage(r Reader) (map[string]types.Usage, error) {
	out := map[string]types.Usage{}
	var derr error
	err := r.Iterate(prefixUsage, func(k, v []byte) bool {
		var pub []byte
		if _, derr = fmt.Sscanf(string(k[len(prefixUsage):]), "%x", &pub); derr != nil {
			return false
		}
		var u types.Usage
		if derr = u.Unmarshal(v); derr != nil {
			return false
		}
		out[string(pub)] = u
		return true
	})
	if err == nil {
		err = derr
	}
	return out, err
}
