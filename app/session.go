package app

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/bftmon/bftmon/app/types"
)

// Session behaviours: what happens to the keys a session holds when it is
// invalidated.
const (
	BehaviorRelease = "release"
	BehaviorDelete  = "delete"
)

// Bounds of sessions (Consul's TTL bounds and lock-delay cap).
const (
	MinSessionTTLMs        = 10_000
	MaxSessionTTLMs        = 24 * 3600 * 1000
	DefaultLockDelayMs     = 15_000
	MaxLockDelayMs         = 60_000
	MaxSessionNameBytes    = 128
	MaxSessionsPerInstance = 64
)

// SessionID is the id of the session that the transaction tx creates: the
// first 16 bytes of its SHA-256 (CometBFT's tx hash) in the UUID layout
// Consul's clients expect. A client knows it before the tx commits.
func SessionID(tx []byte) string {
	h := sha256.Sum256(tx)
	b := h[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8: custom
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	x := hex.EncodeToString(b)
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// validSessionCreate checks a session creation without looking at any state.
func validSessionCreate(m *types.SessionCreate) error {
	if m == nil {
		return refuse(CodeInvalid, "empty session create")
	}
	what := fmt.Sprintf("session create for %s/%s", m.Service, m.Instance)
	if err := validName("service name", m.Service); err != nil {
		return refuse(CodeInvalid, "%s: %v", what, err)
	}
	if err := validName("instance id", m.Instance); err != nil {
		return refuse(CodeInvalid, "%s: %v", what, err)
	}
	switch {
	case len(m.Name) > MaxSessionNameBytes || !utf8.ValidString(m.Name):
		return refuse(CodeInvalid, "%s: name must be valid UTF-8 of at most %d bytes", what, MaxSessionNameBytes)
	case m.TtlMs != 0 && (m.TtlMs < MinSessionTTLMs || m.TtlMs > MaxSessionTTLMs):
		return refuse(CodeInvalid, "%s: ttl %d ms outside 10 s .. 24 h (0: none)", what, m.TtlMs)
	case m.Behavior != "" && m.Behavior != BehaviorRelease && m.Behavior != BehaviorDelete:
		return refuse(CodeInvalid, "%s: behavior %q: want release or delete", what, m.Behavior)
	case m.LockDelayMs < 0 || m.LockDelayMs > MaxLockDelayMs:
		return refuse(CodeInvalid, "%s: lock-delay %d ms outside 0 .. 60 s", what, m.LockDelayMs)
	case m.NoLockDelay && m.LockDelayMs != 0:
		return refuse(CodeInvalid, "%s: a lock-delay and no lock-delay at once", what)
	}
	return nil
}

// sessionCreate opens a session for an instance. The instance must be
// registered and none of its checks' hard status critical.
func (a *App) sessionCreate(signer, tx []byte, m *types.SessionCreate) (string, error) {
	if err := validSessionCreate(m); err != nil {
		return "", err
	}
	if err := a.authorizeOperator(signer, m.Service); err != nil {
		return "", err
	}
	si := a.instance(m.Service, m.Instance)
	if si == nil {
		return "", refuse(CodeNotFound, "session create for %s/%s: no such instance is registered", m.Service, m.Instance)
	}
	for i := range si.Checks {
		var st types.CheckState
		if _, err := a.get(checkKey(CheckRef(si.Name, si.Id, si.Checks[i].Id)), &st); err != nil {
			return "", err
		}
		if st.Hard == types.STATUS_CRITICAL {
			return "", refuse(CodeInvalid, "session create for %s/%s: check %s is critical", m.Service, m.Instance, si.Checks[i].Id)
		}
	}
	n := 0
	if err := a.store.Iterate(instSessPrefix(m.Service, m.Instance), func(_, _ []byte) bool { n++; return true }); err != nil {
		return "", err
	}
	if n >= MaxSessionsPerInstance {
		return "", refuse(CodeTooLarge, "session create for %s/%s: the instance already has %d sessions", m.Service, m.Instance, n)
	}
	s := types.Session{
		Id: SessionID(tx), Name: m.Name, Service: m.Service, Instance: m.Instance,
		TtlMs: m.TtlMs, Behavior: m.Behavior, LockDelayMs: m.LockDelayMs,
		CreateIndex: uint64(a.meta.Height), Operator: signer,
	}
	if s.Behavior == "" {
		s.Behavior = BehaviorRelease
	}
	if s.LockDelayMs == 0 && !m.NoLockDelay {
		s.LockDelayMs = DefaultLockDelayMs
	}
	if old, err := a.store.Get(sessionKey(s.Id)); err != nil || old != nil {
		if err != nil {
			return "", err
		}
		return "", refuse(CodeInvalid, "session %s exists already", s.Id)
	}
	if s.TtlMs > 0 {
		s.ExpiresMs = a.meta.TimeMs + s.TtlMs
		if err := a.store.Set(ttlKey(s.ExpiresMs, s.Id), []byte{1}); err != nil {
			return "", err
		}
	}
	if err := a.put(sessionKey(s.Id), &s); err != nil {
		return "", err
	}
	if err := a.store.Set(instSessKey(s.Service, s.Instance, s.Id), []byte{1}); err != nil {
		return "", err
	}
	a.sessionsTouched()
	return fmt.Sprintf("created session %s for %s/%s", s.Id, s.Service, s.Instance), nil
}

// ownSession loads session id for an operation by signer, who must be an
// operator whose prefixes cover the session's service.
func (a *App) ownSession(signer []byte, verb, id string) (*types.Session, error) {
	var s types.Session
	ok, err := a.get(sessionKey(id), &s)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, refuse(CodeNotFound, "session %s %q: unknown, or invalidated", verb, id)
	}
	if err := a.authorizeOperator(signer, s.Service); err != nil {
		return nil, fmt.Errorf("session %s %s of %s/%s: %w", verb, id, s.Service, s.Instance, err)
	}
	return &s, nil
}

// sessionRenew resets a session's TTL from the block time.
func (a *App) sessionRenew(signer []byte, m *types.SessionRenew) (string, error) {
	if m == nil {
		return "", refuse(CodeInvalid, "empty session renew")
	}
	s, err := a.ownSession(signer, "renew", m.Id)
	if err != nil {
		return "", err
	}
	if s.TtlMs == 0 {
		return fmt.Sprintf("session %s has no TTL", s.Id), nil
	}
	if err := a.store.Delete(ttlKey(s.ExpiresMs, s.Id)); err != nil {
		return "", err
	}
	s.ExpiresMs = a.meta.TimeMs + s.TtlMs
	if err := a.store.Set(ttlKey(s.ExpiresMs, s.Id), []byte{1}); err != nil {
		return "", err
	}
	if err := a.put(sessionKey(s.Id), s); err != nil {
		return "", err
	}
	a.sessionsTouched()
	return fmt.Sprintf("renewed session %s until block time %d", s.Id, s.ExpiresMs), nil
}

// sessionDestroy invalidates a session.
func (a *App) sessionDestroy(signer []byte, m *types.SessionDestroy) (string, error) {
	if m == nil {
		return "", refuse(CodeInvalid, "empty session destroy")
	}
	s, err := a.ownSession(signer, "destroy", m.Id)
	if err != nil {
		return "", err
	}
	if err := a.invalidate(s); err != nil {
		return "", err
	}
	return fmt.Sprintf("destroyed session %s", s.Id), nil
}

func (a *App) sessionsTouched() { a.meta.SessionsHeight = a.meta.Height; a.sessionsChanged = true }

// invalidate ends session s: the keys it holds are released (or deleted),
// each with its lock-delay, and its records go.
func (a *App) invalidate(s *types.Session) error {
	if err := a.releaseHeld(s); err != nil {
		return fmt.Errorf("invalidate session %s: %w", s.Id, err)
	}
	keys := [][]byte{sessionKey(s.Id), instSessKey(s.Service, s.Instance, s.Id)}
	if s.TtlMs > 0 {
		keys = append(keys, ttlKey(s.ExpiresMs, s.Id))
	}
	for _, k := range keys {
		if err := a.store.Delete(k); err != nil {
			return fmt.Errorf("invalidate session %s: %w", s.Id, err)
		}
	}
	a.sessionsTouched()
	return nil
}

// invalidateInstance ends every session of an instance, in id order.
func (a *App) invalidateInstance(service, instance string) error {
	prefix := instSessPrefix(service, instance)
	var ids []string
	if err := a.store.Iterate(prefix, func(k, _ []byte) bool {
		ids = append(ids, string(k[len(prefix):]))
		return true
	}); err != nil {
		return err
	}
	return a.invalidateIDs(ids)
}

// invalidateIDs invalidates the sessions ids that still exist, in order.
func (a *App) invalidateIDs(ids []string) error {
	for _, id := range ids {
		var s types.Session
		ok, err := a.get(sessionKey(id), &s)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := a.invalidate(&s); err != nil {
			return err
		}
	}
	return nil
}

// sessionExpiry is the block time at which s's TTL lapses: its deadline, or
// for a session that was alive when the chain last halted, a TTL after the
// chain resumed (as Consul resets every TTL when a new leader takes over):
// a chain that did not commit could not take the renewals in.
func (a *App) sessionExpiry(s *types.Session) int64 {
	at := s.ExpiresMs
	if from, to := a.meta.HaltedFromMs, a.meta.HaltedToMs; to > 0 && at > from && at-s.TtlMs < to {
		at = max(at, to+s.TtlMs)
	}
	return at
}

// sweepSessions invalidates the sessions whose TTL lapsed at the block time,
// once per block, before its first transaction executes.
func (a *App) sweepSessions() error {
	if a.swept {
		return nil
	}
	a.swept = true
	now := a.meta.TimeMs
	var ids []string
	var ats []int64
	if err := a.store.Iterate(prefixTTL, func(k, _ []byte) bool {
		rest := k[len(prefixTTL):]
		if len(rest) < 8 {
			return true
		}
		at := int64(binary.BigEndian.Uint64(rest[:8]))
		if at > now {
			return false
		}
		ids, ats = append(ids, string(rest[8:])), append(ats, at)
		return true
	}); err != nil {
		return fmt.Errorf("session ttls: %w", err)
	}
	for i, id := range ids {
		var s types.Session
		ok, err := a.get(sessionKey(id), &s)
		if err != nil {
			return err
		}
		if !ok || s.ExpiresMs != ats[i] {
			if err := a.store.Delete(ttlKey(ats[i], id)); err != nil {
				return err
			}
			continue
		}
		if at := a.sessionExpiry(&s); at > now { // extended across a halt
			if err := a.store.Delete(ttlKey(s.ExpiresMs, id)); err != nil {
				return err
			}
			s.ExpiresMs = at
			if err := a.store.Set(ttlKey(at, id), []byte{1}); err != nil {
				return err
			}
			if err := a.put(sessionKey(id), &s); err != nil {
				return err
			}
			continue
		}
		if err := a.invalidate(&s); err != nil {
			return err
		}
	}
	return nil
}

// invalidateCritical ends the sessions of the instances that a check's
// hard status made critical in the current block, in name order.
//
// It reads the instance-to-session index in one scan for the whole block:
// a scan per instance walks every key the block wrote once per critical
// instance (the store's iterator merges the unsaved writes), which made a
// mass outage cost the square of the checks flipping (issue 23).
func (a *App) invalidateCritical() error {
	if len(a.critical) == 0 {
		return nil
	}
	byRef := map[string][]string{}
	if err := a.store.Iterate(prefixInstSess, func(k, _ []byte) bool {
		rest := string(k[len(prefixInstSess):])
		if i := strings.LastIndexByte(rest, '/'); i >= 0 && a.critical[rest[:i]] {
			byRef[rest[:i]] = append(byRef[rest[:i]], rest[i+1:])
		}
		return true
	}); err != nil {
		return fmt.Errorf("sessions of critical instances: %w", err)
	}
	refs := make([]string, 0, len(byRef))
	for r := range byRef {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	for _, r := range refs {
		if err := a.invalidateIDs(byRef[r]); err != nil {
			return fmt.Errorf("sessions of %s: %w", r, err)
		}
	}
	return nil
}
