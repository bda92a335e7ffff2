package app

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"

	"github.com/bftmon/bftmon/app/types"
)

// Known check kinds and their bounds.
var checkKinds = map[string]bool{"http": true, "tcp": true, "exec": true}

// Bounds of an exec check's argv.
const (
	maxArgs   = 64
	maxArgLen = 1024
)

const (
	minIntervalMs = 1000
	maxIntervalMs = 24 * 3600 * 1000
)

// authorizeOperator checks that signer is an operator whose scope covers the
// service name.
func (a *App) authorizeOperator(signer []byte, service string) error {
	op := a.operators[string(signer)]
	if op == nil {
		return refuse(CodeUnauthorized, "signer %s is not an operator", types.KeyID(signer))
	}
	for _, p := range op.Prefixes {
		if strings.HasPrefix(service, p) {
			return nil
		}
	}
	return refuse(CodeUnauthorized, "operator %s may manage services named %s, not %q",
		op.Name, quoteList(op.Prefixes), service)
}

func quoteList(prefixes []string) string {
	q := make([]string, len(prefixes))
	for i, p := range prefixes {
		q[i] = fmt.Sprintf("%q*", p)
	}
	return strings.Join(q, " or ")
}

// validName checks a name used in keys and DNS labels: 1..63 of [a-z0-9._-],
// starting with a letter or digit.
func validName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s %q is longer than %d characters", what, s, MaxNameLen)
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || i > 0 && (r == '-' || r == '_' || r == '.')
		if !ok {
			return fmt.Errorf("%s %q: use lower-case letters, digits, '-', '_' and '.', starting with a letter or digit", what, s)
		}
	}
	return nil
}

// validateInstance checks a registration without looking at any state.
func validateInstance(si *types.ServiceInstance) error {
	if err := validateInstanceErr(si); err != nil {
		return refuse(CodeInvalid, "register %s/%s: %v", si.Name, si.Id, err)
	}
	return nil
}

func validateInstanceErr(si *types.ServiceInstance) error {
	if err := validName("service name", si.Name); err != nil {
		return err
	}
	if err := validName("instance id", si.Id); err != nil {
		return err
	}
	if si.Port > 65535 {
		return fmt.Errorf("port %d above 65535", si.Port)
	}
	if si.Datacenter != "" {
		if err := validName("datacenter", si.Datacenter); err != nil {
			return err
		}
	}
	if !sortedUnique(si.Meta) {
		return fmt.Errorf("meta keys must be sorted and unique")
	}
	if len(si.Checks) > MaxChecks {
		return fmt.Errorf("%d checks, at most %d", len(si.Checks), MaxChecks)
	}
	seen := map[string]bool{}
	for i := range si.Checks {
		c := &si.Checks[i]
		if err := validateCheck(c); err != nil {
			return fmt.Errorf("check %s: %w", c.Id, err)
		}
		if seen[c.Id] {
			return fmt.Errorf("check id %q used twice", c.Id)
		}
		seen[c.Id] = true
	}
	return nil
}

func sortedUnique(ps []types.Pair) bool {
	for i := 1; i < len(ps); i++ {
		if ps[i-1].Key >= ps[i].Key {
			return false
		}
	}
	return true
}

func validateCheck(c *types.Check) error {
	if err := validName("check id", c.Id); err != nil {
		return err
	}
	if !checkKinds[c.Kind] {
		return fmt.Errorf("unknown check kind %q (known: exec, http, tcp)", c.Kind)
	}
	if c.IntervalMs < minIntervalMs || c.IntervalMs > maxIntervalMs {
		return fmt.Errorf("interval %dms outside 1s..24h", c.IntervalMs)
	}
	if c.TimeoutMs <= 0 || c.TimeoutMs > c.IntervalMs {
		return fmt.Errorf("timeout %dms must be above 0 and at most the interval %dms", c.TimeoutMs, c.IntervalMs)
	}
	if c.TtlMs < c.IntervalMs {
		return fmt.Errorf("ttl %dms below the interval %dms", c.TtlMs, c.IntervalMs)
	}
	if c.ConfirmMs < 0 || c.DeregisterCriticalAfterMs < 0 {
		return fmt.Errorf("confirm and deregister_critical_after must not be negative")
	}
	for _, dc := range c.Datacenters {
		if err := validName("datacenter", dc); err != nil {
			return err
		}
	}
	switch c.Kind {
	case "http":
		if c.Http == nil {
			return fmt.Errorf("http check without http parameters")
		}
		u, err := url.Parse(c.Http.Url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("http url %q: must be an absolute http or https URL", c.Http.Url)
		}
		for _, s := range c.Http.ExpectStatus {
			if s < 100 || s > 599 {
				return fmt.Errorf("expected status %d outside 100..599", s)
			}
		}
	case "exec":
		if c.Exec == nil || len(c.Exec.Argv) == 0 {
			return fmt.Errorf("exec check without argv")
		}
		if !strings.HasPrefix(c.Exec.Argv[0], "/") {
			return fmt.Errorf("exec argv[0] %q: give the plugin's absolute path", c.Exec.Argv[0])
		}
		if len(c.Exec.Argv) > maxArgs {
			return fmt.Errorf("exec argv has %d entries, at most %d", len(c.Exec.Argv), maxArgs)
		}
		for i, a := range c.Exec.Argv {
			if len(a) > maxArgLen {
				return fmt.Errorf("exec argv[%d] is %d bytes, at most %d", i, len(a), maxArgLen)
			}
		}
		if ts := c.Exec.TimeoutStatus; ts != types.STATUS_NONE && !decidable(ts) {
			return fmt.Errorf("exec timeout_status must be passing, warning, critical or unknown")
		}
	case "tcp":
		if c.Tcp == nil {
			return fmt.Errorf("tcp check without tcp parameters")
		}
		if _, _, err := net.SplitHostPort(c.Tcp.Address); err != nil {
			return fmt.Errorf("tcp address %q: want host:port", c.Tcp.Address)
		}
	}
	return nil
}

// register adds or replaces an instance. Checks whose definition is
// unchanged keep their state; changed or removed checks start afresh.
func (a *App) register(signer []byte, si *types.ServiceInstance) (string, error) {
	if err := a.authorizeOperator(signer, si.Name); err != nil {
		return "", err
	}
	if err := validateInstance(si); err != nil {
		return "", err
	}
	old := a.instance(si.Name, si.Id)
	exists := old != nil
	if !exists && a.instances[si.Name] >= MaxInstances {
		return "", refuse(CodeTooLarge, "register %s/%s: service already has %d instances", si.Name, si.Id, MaxInstances)
	}
	rec := *si
	rec.Owner = signer
	rec.RegisteredHeight = a.meta.Height
	if exists {
		rec.RegisteredHeight = old.RegisteredHeight
		for i := range old.Checks {
			oc := &old.Checks[i]
			if nc := findCheck(si, oc.Id); nc != nil && sameCheck(nc, oc) {
				continue
			}
			if err := a.dropCheck(CheckRef(si.Name, si.Id, oc.Id)); err != nil {
				return "", err
			}
		}
	}
	if err := a.put(instanceKey(si.Name, si.Id), &rec); err != nil {
		return "", err
	}
	if !exists {
		a.instances[si.Name]++
	}
	a.catalog[si.Name+"/"+si.Id] = &rec
	for i := range si.Checks {
		a.dirty[CheckRef(si.Name, si.Id, si.Checks[i].Id)] = true
	}
	a.catalogChanged = true
	verb := "registered"
	if exists {
		verb = "updated"
	}
	return fmt.Sprintf("%s %s/%s with %d checks", verb, si.Name, si.Id, len(si.Checks)), nil
}

func findCheck(si *types.ServiceInstance, id string) *types.Check {
	for i := range si.Checks {
		if si.Checks[i].Id == id {
			return &si.Checks[i]
		}
	}
	return nil
}

// deregister removes an instance and all state of its checks.
func (a *App) deregister(signer []byte, m *types.DeregisterService) (string, error) {
	if err := a.authorizeOperator(signer, m.Name); err != nil {
		return "", err
	}
	si := a.instance(m.Name, m.Id)
	if si == nil {
		return "", refuse(CodeNotFound, "deregister %s/%s: no such instance is registered", m.Name, m.Id)
	}
	for i := range si.Checks {
		if err := a.dropCheck(CheckRef(si.Name, si.Id, si.Checks[i].Id)); err != nil {
			return "", err
		}
	}
	if err := a.store.Delete(instanceKey(m.Name, m.Id)); err != nil {
		return "", err
	}
	a.instances[m.Name]--
	delete(a.catalog, m.Name+"/"+m.Id)
	a.catalogChanged = true
	return fmt.Sprintf("deregistered %s/%s", m.Name, m.Id), nil
}

// dropCheck deletes a check's state and observation records.
func (a *App) dropCheck(ref string) error {
	var keys [][]byte
	if err := a.store.Iterate(recordPrefix(ref), func(k, _ []byte) bool {
		keys = append(keys, k)
		return true
	}); err != nil {
		return err
	}
	keys = append(keys, checkKey(ref))
	sort.Slice(keys, func(i, j int) bool { return string(keys[i]) < string(keys[j]) })
	for _, k := range keys {
		if err := a.store.Delete(k); err != nil {
			return err
		}
	}
	a.schedule(ref, 0)
	delete(a.dirty, ref)
	return nil
}

func sameCheck(x, y *types.Check) bool {
	bx, err1 := x.Marshal()
	by, err2 := y.Marshal()
	return err1 == nil && err2 == nil && string(bx) == string(by)
}
