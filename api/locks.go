package api

import (
	"context"
	"net/http"
)

// Lock is who holds a key's lock in the agreed state (GET /v1/locks/KEY).
type Lock struct {
	Key string `json:"key"`
	// Exists tells whether the key has an entry at all.
	Exists bool `json:"exists"`
	// Session holds the lock ("": free); Service and Instance are the
	// session's instance, SessionName its name.
	Session     string `json:"session,omitempty"`
	Service     string `json:"service,omitempty"`
	Instance    string `json:"instance,omitempty"`
	SessionName string `json:"session_name,omitempty"`
	// LockIndex counts the acquisitions; ModifyIndex is the height of the
	// entry's last write (for a held lock: its acquisition, or the
	// holder's latest write of the value).
	LockIndex uint64 `json:"lock_index"`
	// Value is the entry's value (a holder may publish its address there).
	Value       []byte `json:"value,omitempty"`
	ModifyIndex uint64 `json:"modify_index"`
	// LockDelayUntilMs is the block time (Unix ms) until which nobody may
	// take the lock, after its holder's session ended (0: none).
	LockDelayUntilMs int64 `json:"lock_delay_until_ms,omitempty"`
	// BlockTimeMs is the time of the block the answer was read at.
	BlockTimeMs int64 `json:"block_time_ms"`
}

// Lock returns the holder of key's lock; opts may block (WaitIndex: until
// the key's index passes it).
func (c *Client) Lock(ctx context.Context, key string, opts *QueryOptions) (Lock, QueryMeta, error) {
	var l Lock
	meta, err := c.read(ctx, http.MethodGet, "/v1/locks/"+key+opts.encode(), nil, &l)
	return l, meta, err
}
