package server

import (
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app/types"
)

// Blocking-query limits: a wait is capped, and spread by up to 1/16 more so
// that clients woken together do not come back together.
const (
	DefaultWait = 5 * time.Minute
	MaxWait     = 10 * time.Minute
)

// params reads a request's query parameters. It remembers the first bad
// value and which names were read, so that a misspelt one is reported
// instead of ignored.
type params struct {
	v    url.Values
	used map[string]bool
	err  error
}

func newParams(u *url.URL) *params {
	return &params{v: u.Query(), used: map[string]bool{}}
}

func (p *params) fail(name, value, want string) {
	if p.err == nil {
		p.err = fmt.Errorf("parameter %s=%q: %s", name, value, want)
	}
}

// str is the parameter's value ("" if absent).
func (p *params) str(name string) string {
	p.used[name] = true
	return p.v.Get(name)
}

// has tells whether the parameter is present, with or without a value
// (Consul's ?passing).
func (p *params) has(name string) bool {
	p.used[name] = true
	_, ok := p.v[name]
	return ok
}

// flag is a present-means-true parameter that also takes true or false.
func (p *params) flag(name string) bool {
	if !p.has(name) {
		return false
	}
	switch v := p.v.Get(name); v {
	case "", "true", "1":
		return true
	case "false", "0":
		return false
	default:
		p.fail(name, v, "want true or false, or the name alone")
		return false
	}
}

// list is every value of a repeated parameter, commas also separating.
func (p *params) list(name string) []string {
	p.used[name] = true
	var out []string
	for _, v := range p.v[name] {
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
	}
	return out
}

// statuses reads ?status= as agreed statuses.
func (p *params) statuses() []types.Status {
	var out []types.Status
	for _, v := range p.list("status") {
		st, err := types.ParseStatus(v)
		if err != nil {
			p.fail("status", v, "want passing, warning, critical, unknown, pending, disputed or stale")
			continue
		}
		out = append(out, st)
	}
	return out
}

// meta reads ?meta.KEY=VALUE pairs.
func (p *params) meta() map[string]string {
	p.used["meta.KEY"] = true
	var out map[string]string
	for k := range p.v {
		if key, ok := strings.CutPrefix(k, "meta."); ok {
			p.used[k] = true
			if key == "" {
				p.fail(k, p.v.Get(k), "want meta.KEY=VALUE")
				continue
			}
			if out == nil {
				out = map[string]string{}
			}
			out[key] = p.v.Get(k)
		}
	}
	return out
}

// limit reads ?limit= within 1..max, def if absent.
func (p *params) limit(def, max int) int {
	v := p.str("limit")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		p.fail("limit", v, fmt.Sprintf("want a number from 1 to %d", max))
		return def
	}
	return n
}

// blocking is a read's ?index=&wait=: wait until the answer's index is
// above index, for at most wait; its ?proof=: answer the proven form; and
// its ?min_height=: answer from a height at least minHeight.
type blocking struct {
	on        bool
	index     int64
	wait      time.Duration
	proof     bool
	minHeight int64
}

func (p *params) blocking() blocking {
	var b blocking
	if v := p.str(api.MinHeightParam); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			p.fail(api.MinHeightParam, v, "want the non-negative height the answer must be at or above (the X-Bftmon-Height of an earlier answer, or a write's commit height)")
		}
		b.minHeight = n
	}
	if v := p.str("index"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			p.fail("index", v, "want the non-negative index of an earlier answer (its X-Bftmon-Index header)")
		}
		b.on, b.index = n > 0, n
	}
	b.wait = DefaultWait
	if v := p.str("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			p.fail("wait", v, "want a duration such as 30s or 5m")
		} else {
			b.wait = min(d, MaxWait)
		}
	}
	b.wait += time.Duration(rand.Int64N(int64(b.wait)/16 + 1))
	return b
}

// check reports the first bad value, or, unless lenient, a parameter no
// one read.
func (p *params) check(lenient bool) error {
	if p.err != nil || lenient {
		return p.err
	}
	var unknown []string
	for k := range p.v {
		if !p.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	known := make([]string, 0, len(p.used))
	for k := range p.used {
		if k == "meta.KEY" || !strings.HasPrefix(k, "meta.") {
			known = append(known, k)
		}
	}
	slices.Sort(known)
	return fmt.Errorf("unknown parameter %q (this route takes %s)", unknown[0], strings.Join(known, ", "))
}
