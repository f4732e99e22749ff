package caddyticketkeys

import (
	"log/slog"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestLiveLoggerFollowsTheLatestConfig: a Source shared across reloads keeps
// the logger it was built with (with its attributes), but its records go to
// the zap logger of the config loaded last.
func TestLiveLoggerFollowsTheLatestConfig(t *testing.T) {
	core1, logs1 := observer.New(zap.InfoLevel)
	core2, logs2 := observer.New(zap.InfoLevel)
	var live liveLogger
	live.set(zapHandler(zap.New(core1).Named("tls.stek.ticketkeys")))
	logger := slog.New(live.handler()).With(slog.String("keyring", "ticketkeys/web")).WithGroup("g")

	logger.Info("first", slog.Int("n", 1))
	live.set(zapHandler(zap.New(core2).Named("tls.stek.ticketkeys")))
	logger.Info("second", slog.Int("n", 2))
	logger.Debug("below the level")

	if logs1.Len() != 1 || logs1.All()[0].Message != "first" {
		t.Fatalf("first logger got %d entries, want only \"first\"", logs1.Len())
	}
	if logs2.Len() != 1 || logs2.All()[0].Message != "second" {
		t.Fatalf("second logger got %d entries, want only \"second\"", logs2.Len())
	}
	e := logs2.All()[0]
	if e.LoggerName != "tls.stek.ticketkeys" || e.ContextMap()["keyring"] != "ticketkeys/web" {
		t.Fatalf("second entry: logger %q, fields %v; want the module's name and the keyring attribute", e.LoggerName, e.ContextMap())
	}
}
