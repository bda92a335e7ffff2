package app

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/internal/jsonconf"
)

// Genesis is the application's part of the genesis file (its app_state).
type Genesis struct {
	Observers []GenesisObserver `json:"observers"`
	Operators []GenesisOperator `json:"operators"`
	// Quotas bound what each operator keeps in the state (nil: defaults).
	Quotas *GenesisQuotas `json:"quotas,omitempty"`
	// QuietMs, if above 0, lets a block that changes nothing, less than
	// QuietMs after the last block that did, leave the state as it was
	// (App.quiet; bftmon init and testnet write DefaultQuietMs unless their
	// blocks are steady). 0, and a genesis without it, record every block.
	QuietMs int64 `json:"quiet_ms,omitempty"`
}

// GenesisObserver is an observer in genesis.
type GenesisObserver struct {
	Name       string `json:"name"`
	PubKey     string `json:"pub_key"` // base64 ed25519 public key
	Datacenter string `json:"datacenter"`
	Weight     uint64 `json:"weight"`
}

// GenesisOperator is an operator in genesis.
type GenesisOperator struct {
	Name     string   `json:"name"`
	PubKey   string   `json:"pub_key"` // base64 ed25519 public key
	Prefixes []string `json:"prefixes"`
}

// ParseGenesis decodes and validates app_state; an unknown key is an
// error naming its line within app_state.
func ParseGenesis(appState []byte) (*Genesis, error) {
	return ParseGenesisFile("genesis app_state", 1, appState)
}

// ParseGenesisFile is ParseGenesis for the app_state of file, which starts
// on line line of it: errors name the file's line.
func ParseGenesisFile(file string, line int, appState []byte) (*Genesis, error) {
	var g Genesis
	if len(bytes.TrimSpace(appState)) == 0 {
		return nil, fmt.Errorf("%s: genesis app_state is empty: it must list at least one observer", file)
	}
	// Leading newlines shift the decoder's lines onto the file's.
	padded := append(bytes.Repeat([]byte("\n"), max(line-1, 0)), appState...)
	if _, err := jsonconf.Decode(file, padded, &g); err != nil {
		return nil, fmt.Errorf("genesis app_state: %w", err)
	}
	if len(g.Observers) == 0 {
		return nil, fmt.Errorf("genesis app_state lists no observers: add at least one")
	}
	// Quiet blocks must never look like a gap between blocks (GapMs), after
	// which reports are judged at the gap's start for GapGraceMs.
	if g.QuietMs < 0 || g.QuietMs > GapMs/2 {
		return nil, fmt.Errorf("genesis app_state: quiet_ms %d: want 0 (record every block) to %d (half of app.GapMs, so that an idle network's quiet blocks never look like a gap)", g.QuietMs, GapMs/2)
	}
	seen := map[string]bool{}
	for i, o := range g.Observers {
		pub, err := decodePub(o.PubKey)
		if err != nil {
			return nil, fmt.Errorf("genesis observer %d (%s): %w", i, o.Name, err)
		}
		if o.Weight == 0 {
			return nil, fmt.Errorf("genesis observer %d (%s): weight must be at least 1", i, o.Name)
		}
		if err := validName("datacenter", o.Datacenter); err != nil {
			return nil, fmt.Errorf("genesis observer %d (%s): %w", i, o.Name, err)
		}
		id := types.KeyID(pub)
		if seen[id] {
			return nil, fmt.Errorf("genesis observer %d (%s): key listed twice", i, o.Name)
		}
		seen[id] = true
	}
	for i, o := range g.Operators {
		if _, err := decodePub(o.PubKey); err != nil {
			return nil, fmt.Errorf("genesis operator %d (%s): %w", i, o.Name, err)
		}
	}
	return &g, nil
}

func decodePub(s string) ([]byte, error) {
	pub, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(pub) != 32 {
		return nil, fmt.Errorf("pub_key %q is not a base64 ed25519 public key", s)
	}
	return pub, nil
}

// InitChain writes genesis into the state.
func (a *App) InitChain(chainID string, g *Genesis) error {
	a.meta = types.Meta{ChainId: chainID}
	obs := make([]types.Observer, 0, len(g.Observers))
	for _, o := range g.Observers {
		pub, _ := decodePub(o.PubKey)
		obs = append(obs, types.Observer{Id: types.KeyID(pub), Name: o.Name, PubKey: pub, Datacenter: o.Datacenter, Weight: o.Weight})
	}
	sort.Slice(obs, func(i, j int) bool { return obs[i].Id < obs[j].Id })
	for i := range obs {
		if err := a.put(observerKey(obs[i].Id), &obs[i]); err != nil {
			return err
		}
	}
	for _, o := range g.Operators {
		pub, _ := decodePub(o.PubKey)
		prefixes := o.Prefixes
		if prefixes == nil {
			prefixes = []string{""}
		}
		op := types.Operator{Name: o.Name, PubKey: pub, Prefixes: prefixes}
		if err := a.put(operatorKey(fmt.Sprintf("%x", pub)), &op); err != nil {
			return err
		}
	}
	if err := a.store.Set(keyQuotas, encodeQuotas(g.Quotas.Resolve())); err != nil {
		return fmt.Errorf("store quotas: %w", err)
	}
	if g.QuietMs > 0 {
		if err := a.store.Set(keyQuiet, binary.BigEndian.AppendUint64(nil, uint64(g.QuietMs))); err != nil {
			return fmt.Errorf("store quiet_ms: %w", err)
		}
	}
	if err := a.put(keyInfo, &a.meta); err != nil {
		return err
	}
	return a.load()
}
