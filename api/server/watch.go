package server

import (
	"strings"
	"sync"

	"github.com/bftmon/bftmon/app"
)

// Topics a blocking query can wait on. A topic fires at a commit that
// changed what it names.
const (
	topicBlock     = "block"     // every commit
	topicState     = "state"     // any service's agreed state
	topicCatalog   = "catalog"   // registrations
	topicAlerts    = "alerts"    // the alert log
	topicObservers = "observers" // suspect flags
	topicReceivers = "receivers" // receivers' acknowledgement keys
)

// serviceTopic is the topic of one service's agreed state.
func serviceTopic(name string) string { return "service/" + name }

// hub wakes blocking queries when a commit changes what they watch. A
// waiter holds a channel that is closed at the next change of its topic;
// waiters on one topic share it. Nothing runs between commits: an idle
// blocking query is a parked goroutine.
type hub struct {
	mu     sync.Mutex
	topics map[string]*topic
}

type topic struct {
	ch      chan struct{}
	waiters int
}

func newHub() *hub { return &hub{topics: map[string]*topic{}} }

// watch returns a channel closed at the next change of name, and a release
// to call when the caller stops waiting on it.
func (h *hub) watch(name string) (<-chan struct{}, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.topics[name]
	if t == nil {
		t = &topic{ch: make(chan struct{})}
		h.topics[name] = t
	}
	t.waiters++
	ch := t.ch
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		// The topic may have fired and been replaced since.
		if cur := h.topics[name]; cur != nil && cur.ch == ch {
			if cur.waiters--; cur.waiters == 0 {
				delete(h.topics, name)
			}
		}
	}
}

func (h *hub) fire(name string) {
	if t := h.topics[name]; t != nil {
		close(t.ch)
		delete(h.topics, name)
	}
}

// committed wakes the waiters on what a block changed.
func (h *hub) committed(c app.Changes) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fire(topicBlock)
	for _, s := range c.Services {
		h.fire(serviceTopic(s))
	}
	if len(c.Services) > 0 {
		h.fire(topicState)
	}
	if c.Catalog {
		h.fire(topicCatalog)
	}
	if c.Alerts {
		h.fire(topicAlerts)
	}
	if c.Observers {
		h.fire(topicObservers)
	}
	if c.Receivers {
		h.fire(topicReceivers)
	}
	if c.Sessions {
		h.fire(topicSessions)
	}
	if len(c.KVKeys) > 0 || len(c.KVTrees) > 0 {
		for name := range h.topics {
			if prefix, ok := strings.CutPrefix(name, "kv:"); ok && c.KVChanged(prefix) {
				h.fire(name)
			}
		}
	}
}

// waiting is the number of topics with waiters, for tests.
func (h *hub) waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.topics)
}
