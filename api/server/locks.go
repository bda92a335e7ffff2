package server

import (
	"errors"
	"net/http"

	"github.com/bftmon/bftmon/api"
	"github.com/bftmon/bftmon/app"
)

// lock answers GET /v1/locks/{key...}: who holds the key's lock in the
// agreed state (api.Lock). Its index is the key's modify index (every
// acquire, release and invalidation writes the entry), or, for an absent
// key, the height of the last key/value change, so a blocking query
// returns when the holder changes.
func (s *Server) lock(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("key")
	b, ok := parse(w, r, false, func(*params) {})
	if !ok {
		return
	}
	if err := app.ValidKVKey(key, false); err != nil {
		writeErr(w, http.StatusBadRequest, "lock "+err.Error())
		return
	}
	s.read(w, r, topicBlock, b, func(q *app.Query) (int64, any, error) {
		out := api.Lock{Key: key, BlockTimeMs: q.Info().BlockTime}
		until, err := q.LockDelay(key)
		if err != nil {
			return 0, nil, err
		}
		if until > out.BlockTimeMs {
			out.LockDelayUntilMs = until
		}
		index := max(q.Indexes().KV, 1)
		e, err := q.KVGet(key)
		switch {
		case errors.Is(err, app.ErrNotFound):
			return index, out, nil
		case err != nil:
			return 0, nil, err
		}
		out.Exists, out.LockIndex, out.ModifyIndex, out.Value = true, e.LockIndex, e.ModifyIndex, e.Value
		if e.Session != "" {
			out.Session = e.Session
			if sess, err := q.Session(e.Session); err == nil {
				out.Service, out.Instance, out.SessionName = sess.Service, sess.Instance, sess.Name
			}
		}
		return int64(max(e.ModifyIndex, 1)), out, nil
	}, bftmonIndex)
}
