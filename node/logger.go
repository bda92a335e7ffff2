package node

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"

	cmtlog "github.com/cometbft/cometbft/libs/log"
)

// cometLogger hands CometBFT's logs to slog. CometBFT's Info is chatty (a
// line per block step), so it becomes Debug.
// While the node stops, CometBFT reports its closed listeners as errors;
// those become Debug too.
// An error whose message says consensus failed goes to failed as well.
type cometLogger struct {
	l        *slog.Logger
	stopping *atomic.Bool
	failed   func(msg string, kv []any)
}

func newCometLogger(l *slog.Logger, stopping *atomic.Bool, failed func(msg string, kv []any)) cmtlog.Logger {
	return cometLogger{l.With("module", "cometbft"), stopping, failed}
}

func (c cometLogger) Debug(msg string, kv ...any) {
	c.l.Log(context.Background(), slog.LevelDebug-1, msg, kv...)
}
func (c cometLogger) Info(msg string, kv ...any) { c.l.Debug(msg, kv...) }
func (c cometLogger) Warn(msg string, kv ...any) { c.l.Warn(msg, kv...) }
func (c cometLogger) Error(msg string, kv ...any) {
	if c.failed != nil && strings.Contains(msg, "CONSENSUS FAILURE") {
		c.failed(msg, kv)
	}
	if c.stopping.Load() {
		c.l.Debug(msg, kv...)
		return
	}
	c.l.Error(msg, kv...)
}

func (c cometLogger) With(kv ...any) cmtlog.Logger {
	return cometLogger{c.l.With(kv...), c.stopping, c.failed}
}
