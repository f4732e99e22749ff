package caddyticketkeys

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
)

// zapHandler turns Caddy's zap logger into a slog.Handler for the client
// package, keeping the logger's name (the module id) and no stack traces.
func zapHandler(l *zap.Logger) slog.Handler {
	return zapslog.NewHandler(l.Core(), zapslog.WithName(l.Name()), zapslog.AddStacktraceAt(slog.Level(127)))
}

// liveLogger is the log destination of a Source shared across config
// reloads: it always writes through the logger of the config loaded last,
// so a reload that changes Caddy's logging also moves the Source's logs.
type liveLogger struct{ cur atomic.Pointer[slog.Handler] }

func (l *liveLogger) set(h slog.Handler) { l.cur.Store(&h) }

// handler returns a slog.Handler that resolves the current destination at
// every record.
func (l *liveLogger) handler() slog.Handler { return liveHandler{l: l} }

// liveHandler replays the attributes and groups added with WithAttrs and
// WithGroup on top of the current destination.
type liveHandler struct {
	l   *liveLogger
	ops []func(slog.Handler) slog.Handler
}

func (h liveHandler) current() slog.Handler {
	p := h.l.cur.Load()
	if p == nil {
		return slog.DiscardHandler
	}
	out := *p
	for _, op := range h.ops {
		out = op(out)
	}
	return out
}

func (h liveHandler) Enabled(ctx context.Context, lvl slog.Level) bool {
	return h.current().Enabled(ctx, lvl)
}

func (h liveHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

func (h liveHandler) with(op func(slog.Handler) slog.Handler) liveHandler {
	ops := append(append([]func(slog.Handler) slog.Handler(nil), h.ops...), op)
	return liveHandler{l: h.l, ops: ops}
}

func (h liveHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithAttrs(as) })
}

func (h liveHandler) WithGroup(name string) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithGroup(name) })
}
