package app

import (
	"encoding/binary"
	"fmt"

	"github.com/bftmon/bftmon/app/types"
)

// AlertObserverEquivocated is the kind of the alert raised when evidence
// that an observer equivocated is committed.
const AlertObserverEquivocated = "observer_equivocated"

// equivocationKey is where the evidence of observer's equivocation under
// nonce is kept.
func equivocationKey(observer string, nonce uint64) []byte {
	k := cat(prefixEquivocation, observer, "")
	return binary.BigEndian.AppendUint64(k, nonce)
}

// validEquivocation is the state-free shape of the evidence.
func validEquivocation(ev *types.EquivocationEvidence) error {
	if len(ev.First) == 0 || len(ev.Second) == 0 {
		return refuse(CodeInvalid, "equivocation evidence needs two signed transactions (first and second)")
	}
	return nil
}

// equivocation records evidence that an observer signed two different
// bodies under one nonce: both transactions must verify against this
// chain, name the same observer and nonce, and differ in what was signed.
// The observer becomes suspect, for good, and an observer_equivocated alert
// is raised. The same pair (or another of the same nonce) is recorded once.
func (a *App) equivocation(signer []byte, ev *types.EquivocationEvidence) (string, error) {
	if err := validEquivocation(ev); err != nil {
		return "", err
	}
	first, err := a.decode(ev.First)
	if err != nil {
		return "", fmt.Errorf("equivocation: first transaction: %w", err)
	}
	second, err := a.decode(ev.Second)
	if err != nil {
		return "", fmt.Errorf("equivocation: second transaction: %w", err)
	}
	obs := a.byPub[string(first.Signer)]
	switch {
	case string(first.Signer) != string(second.Signer):
		return "", refuse(CodeInvalid, "equivocation: the transactions are signed by %s and %s, not by one signer", types.KeyID(first.Signer), types.KeyID(second.Signer))
	case first.Nonce != second.Nonce:
		return "", refuse(CodeInvalid, "equivocation: the transactions have nonces %d and %d, not one", first.Nonce, second.Nonce)
	case obs == nil:
		return "", refuse(CodeInvalid, "equivocation: signer %s is not an observer", types.KeyID(first.Signer))
	}
	c1, ok1 := types.ContentID(ev.First)
	c2, ok2 := types.ContentID(ev.Second)
	if !ok1 || !ok2 {
		return "", refuse(CodeMalformed, "equivocation: a transaction has no content id")
	}
	if c1 == c2 {
		return "", refuse(CodeInvalid, "equivocation: both transactions sign the same body: a replay, not an equivocation")
	}
	key := equivocationKey(obs.Id, first.Nonce)
	var old types.Equivocation
	if found, err := a.get(key, &old); err != nil {
		return "", err
	} else if found {
		return "", refuse(CodeConflict, "equivocation of observer %s under nonce %d is already recorded (height %d)", obs.Name, first.Nonce, old.Height)
	}
	rec := types.Equivocation{Observer: obs.Id, Nonce: first.Nonce, First: ev.First, Second: ev.Second,
		Height: a.meta.Height, TimeMs: a.meta.TimeMs, Reporter: types.KeyID(signer)}
	if err := a.put(key, &rec); err != nil {
		return "", err
	}
	var st types.ObserverStanding
	if _, err := a.get(standingKey(obs.Id), &st); err != nil {
		return "", err
	}
	st.Equivocations++
	if !st.Suspect {
		st.Suspect, st.SuspectHeight = true, a.meta.Height
	}
	if err := a.put(standingKey(obs.Id), &st); err != nil {
		return "", err
	}
	a.meta.ObserversHeight = a.meta.Height
	al := types.Alert{Kind: AlertObserverEquivocated, Observer: obs.Id, Height: a.meta.Height, TimeMs: a.meta.TimeMs,
		Views: []types.ObserverView{{Observer: obs.Id, Datacenter: obs.Datacenter, Fresh: true,
			Output: fmt.Sprintf("signed two different bodies under nonce %d (evidence from %s)", first.Nonce, rec.Reporter)}}}
	al.Id = alertID(a.meta.ChainId, &al)
	a.alerts = append(a.alerts, al)
	return fmt.Sprintf("recorded observer %s's equivocation under nonce %d; it is suspect", obs.Name, first.Nonce), nil
}

// Equivocations lists the committed evidence of observers' equivocation,
// by observer id and nonce.
func (q *Query) Equivocations() ([]types.Equivocation, error) {
	return scan[types.Equivocation](q.r, prefixEquivocation)
}
