package app

import (
	"bytes"
	"fmt"
	"maps"
	"net"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/bftmon/bftmon/app/types"
	"github.com/bftmon/bftmon/app/verdict"
)

// Known check kinds and their bounds.
var checkKinds = map[string]bool{"http": true, "tcp": true, "dns": true, "grpc": true, "exec": true, "passive": true}

// CheckKinds lists the check kinds a registration may use, sorted.
func CheckKinds() []string { return slices.Sorted(maps.Keys(checkKinds)) }

// dnsTypes are the record types a dns check may query.
var dnsTypes = map[string]bool{"A": true, "AAAA": true, "SRV": true, "TXT": true}

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

// ValidateInstance checks a registration without looking at any state: the
// same rules the application applies when the registration is committed, so
// a client can refuse a bad service file before signing it.
func ValidateInstance(si *types.ServiceInstance) error {
	return validateInstanceErr(si)
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
		return fmt.Errorf("unknown check kind %q (known: %s)", c.Kind, strings.Join(CheckKinds(), ", "))
	}
	if c.Kind == "passive" {
		// Nothing is probed: only how long a submitted result stays fresh matters.
		if c.IntervalMs != 0 || c.TimeoutMs != 0 {
			return fmt.Errorf("a passive check has no interval or timeout, only a ttl")
		}
		if c.TtlMs < minIntervalMs || c.TtlMs > maxIntervalMs {
			return fmt.Errorf("passive ttl %dms outside 1s..24h", c.TtlMs)
		}
	} else {
		if c.IntervalMs < minIntervalMs || c.IntervalMs > maxIntervalMs {
			return fmt.Errorf("interval %dms outside 1s..24h", c.IntervalMs)
		}
		if c.TimeoutMs <= 0 || c.TimeoutMs > c.IntervalMs {
			return fmt.Errorf("timeout %dms must be above 0 and at most the interval %dms", c.TimeoutMs, c.IntervalMs)
		}
		if c.TtlMs < c.IntervalMs {
			return fmt.Errorf("ttl %dms below the interval %dms", c.TtlMs, c.IntervalMs)
		}
	}
	if err := onlyParams(c); err != nil {
		return err
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
		if c.Http.BodyRegex != "" {
			if _, err := regexp.Compile(c.Http.BodyRegex); err != nil {
				return fmt.Errorf("http body_regex: %w", err)
			}
		}
		if c.Http.CertExpiryWarnDays > 3650 {
			return fmt.Errorf("http cert_expiry_warn_days %d above 3650", c.Http.CertExpiryWarnDays)
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
		if err := hostPort("tcp address", c.Tcp.Address); err != nil {
			return err
		}
	case "dns":
		if c.Dns == nil {
			return fmt.Errorf("dns check without dns parameters")
		}
		if err := hostPort("dns server", c.Dns.Server); err != nil {
			return err
		}
		if c.Dns.Name == "" {
			return fmt.Errorf("dns check without a name to query")
		}
		if c.Dns.Type != "" && !dnsTypes[c.Dns.Type] {
			return fmt.Errorf("dns type %q: want A, AAAA, SRV or TXT", c.Dns.Type)
		}
	case "grpc":
		if c.Grpc == nil {
			return fmt.Errorf("grpc check without grpc parameters")
		}
		if err := hostPort("grpc address", c.Grpc.Address); err != nil {
			return err
		}
	}
	return nil
}

// hostPort checks that addr is host:port with a numeric port.
func hostPort(what, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err == nil && host != "" {
		if n, perr := strconv.Atoi(port); perr == nil && n > 0 && n <= 65535 {
			return nil
		}
	}
	return fmt.Errorf("%s %q: want host:port", what, addr)
}

// onlyParams checks that a check carries the parameters of its own kind and
// no other kind's.
func onlyParams(c *types.Check) error {
	given := map[string]bool{"http": c.Http != nil, "tcp": c.Tcp != nil, "dns": c.Dns != nil, "grpc": c.Grpc != nil, "exec": c.Exec != nil}
	for _, k := range slices.Sorted(maps.Keys(given)) {
		if given[k] && k != c.Kind {
			return fmt.Errorf("a %s check must not carry %s parameters", c.Kind, k)
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
	if err := a.checkScopes(si); err != nil {
		return "", err
	}
	old := a.instance(si.Name, si.Id)
	exists := old != nil
	if !exists && a.instances[si.Name] >= MaxInstances {
		return "", refuse(CodeTooLarge, "register %s/%s: service already has %d instances", si.Name, si.Id, MaxInstances)
	}
	// The instance counts against its registering operator: one
	// re-registered by another operator moves to it.
	if !exists || !bytes.Equal(old.Owner, signer) {
		if err := a.checkQuota(signer, usageDelta{instances: 1}); err != nil {
			return "", fmt.Errorf("register %s/%s: %w", si.Name, si.Id, err)
		}
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
	if !exists || !bytes.Equal(old.Owner, signer) {
		moved := map[string]*usageDelta{}
		addDelta(moved, signer, usageDelta{instances: 1})
		if exists {
			addDelta(moved, old.Owner, usageDelta{instances: -1})
		}
		if err := a.addUsage(moved); err != nil {
			return "", err
		}
	}
	a.catalog[si.Name+"/"+si.Id] = &rec
	for i := range si.Checks {
		a.dirty[CheckRef(si.Name, si.Id, si.Checks[i].Id)] = true
	}
	if err := a.catalogTouched(si.Name); err != nil {
		return "", err
	}
	verb := "registered"
	if exists {
		verb = "updated"
	}
	return fmt.Sprintf("%s %s/%s with %d checks", verb, si.Name, si.Id, len(si.Checks)), nil
}

// checkScopes refuses a check whose observer scope is not safe
// (verdict.Safety): its quorum is never below a third of all the observers'
// weight, so no minority owns a check by drawing its scope around itself; and
// the scope's honest weight reaches its quorum against every coalition
// holding less than a third of all the weight, so no minority can hide what
// the honest observers of the scope see by lying or staying silent.
// Observers are fixed at genesis, so a scope safe at registration stays safe.
func (a *App) checkScopes(si *types.ServiceInstance) error {
	for i := range si.Checks {
		c := &si.Checks[i]
		var weights []uint64
		for j := range a.observers {
			if InScope(c, &a.observers[j]) {
				weights = append(weights, a.observers[j].Weight)
			}
		}
		s := verdict.ScopeSafety(weights, a.totalWeight, c.Quorum)
		if s.Safe() {
			continue
		}
		scope := "every observer"
		if len(c.Datacenters) > 0 {
			scope = fmt.Sprintf("datacenters %v", c.Datacenters)
		}
		if s.Weight < s.Quorum {
			return refuse(CodeInvalid, "register %s/%s: check %s: its observer scope (%s) holds weight %d of %d, and a verdict needs %d "+
				"(more than two thirds of the scope, at least a third of all observers' weight, and the check's quorum): "+
				"add datacenters to the scope, leave it empty for all, or lower the quorum",
				si.Name, si.Id, c.Id, scope, s.Weight, a.totalWeight, s.Quorum)
		}
		return refuse(CodeInvalid, "register %s/%s: check %s: its observer scope (%s) is not safe: it holds weight %d of %d, "+
			"a coalition of less than a third of all observers' weight can hold %d of it, and the %d left to honest observers "+
			"is below the %d a verdict needs, so such a coalition could hide an outage by lying or staying silent; "+
			"widen the scope (add datacenters, or leave it empty for every observer), give it more observers, or lower the quorum",
			si.Name, si.Id, c.Id, scope, s.Weight, a.totalWeight, s.Tolerated, s.Weight-min(s.Weight, s.Tolerated), s.Quorum)
	}
	return nil
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
	if err := a.invalidateInstance(m.Name, m.Id); err != nil {
		return "", fmt.Errorf("sessions of %s/%s: %w", m.Name, m.Id, err)
	}
	if err := a.store.Delete(instanceKey(m.Name, m.Id)); err != nil {
		return "", err
	}
	a.instances[m.Name]--
	freed := map[string]*usageDelta{}
	addDelta(freed, si.Owner, usageDelta{instances: -1})
	if err := a.addUsage(freed); err != nil {
		return "", err
	}
	delete(a.catalog, m.Name+"/"+m.Id)
	if err := a.catalogTouched(m.Name); err != nil {
		return "", err
	}
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

// catalogTouched records that the current block registered, updated or
// deregistered an instance of service.
func (a *App) catalogTouched(service string) error {
	a.catalogChanged = true
	a.meta.CatalogHeight = a.meta.Height
	return a.touch(service)
}
