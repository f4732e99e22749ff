package ticketkeys

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
)

// parseHistOp reads one operation as histOp.String() prints it, optionally
// after its index (the lines of a shrunk history in a failure message), so a
// counterexample found by the generator is kept as a regression test by
// pasting it.
func parseHistOp(line string) (histOp, error) {
	f := strings.Fields(line)
	if len(f) > 0 {
		if _, err := strconv.Atoi(f[0]); err == nil {
			f = f[1:]
		}
	}
	if len(f) == 0 {
		return histOp{}, fmt.Errorf("empty operation %q", line)
	}
	op := histOp{Kind: f[0]}
	rest := f[1:]
	switch op.Kind {
	case "create", "settings", "rotate", "delete", "to-activation":
		if len(rest) == 0 {
			return op, fmt.Errorf("%q: %s needs a keyring name", line, op.Kind)
		}
		op.Name, rest = rest[0], rest[1:]
	case "config", "wait", "outage", "leader":
	default:
		return op, fmt.Errorf("%q: unknown operation %q", line, op.Kind)
	}
	for _, w := range rest {
		switch {
		case strings.HasPrefix(w, "[") && strings.HasSuffix(w, "]"):
			op.Fault = strings.Trim(w, "[]")
		case strings.Contains(w, "="):
			k, v, _ := strings.Cut(w, "=")
			if op.Data == nil {
				op.Data = map[string]any{}
			}
			switch v {
			case "true", "false":
				op.Data[k] = v == "true"
			default:
				op.Data[k] = v
			}
		default:
			d, err := time.ParseDuration(w)
			if err != nil {
				return op, fmt.Errorf("%q: %q is neither key=value, [fault] nor a duration", line, w)
			}
			op.Wait = d
		}
	}
	return op, nil
}

// historyRegressions are shrunk counterexamples the generator found, each
// with the seed that drew its jitter and reader timings.
var historyRegressions = []struct {
	name string
	seed uint64
	ops  string
}{{
	// A mode=now rotation under a max_key_lifetime that leaves no room for
	// a full retain after the readers of earlier, longer settings are back
	// (ReadersBackBy, 6h after the settings change): the new key stopped
	// encrypting at max_key_lifetime - retain (1h), so its successor
	// activated while go-b still held the 6h ttl of its first read. Found
	// by make stress-engine-history (1M operations).
	name: "rotate now under a lifetime cap keeps readers' lead",
	seed: 1796679491434574009,
	ops: `config max_key_lifetime=90000s max_read_ttl=86400s
		wait 49.243097031s
		create b publish_ahead=0s retain=0s rotation_period=21600s
		create a publish_ahead=120s retain=300s
		wait 27m24.646915361s
		wait 2m54.174873183s
		to-activation a
		create b publish_ahead=600s retain=2700s rotation_period=900s
		wait 28m48.246099645s
		wait 1m59.790495229s
		to-activation a -300ms
		wait 2m4.858281355s
		wait 59.605402735s
		wait 1m16.812983828s
		wait 2m46.020657115s
		wait 1m40.0653179s
		wait 2m56.161546779s
		create b publish_ahead=900s retain=43200s [fail-after-commit]
		wait 1m21.139758179s
		wait 2m54.983267127s
		rotate a mode=scheduled purge_previous=false
		wait 23m6.929647576s
		wait 1m51.150933722s
		wait 2m4.505546101s
		wait 20.63736077s
		config max_key_lifetime=46800s max_read_ttl=86400s [fail-after-commit]
		rotate b mode=now purge_previous=false
		wait 2m35.629078175s
		wait 2m9.610329401s
		create a publish_ahead=100s rotation_period=300s
		to-activation a 400ms
		wait 2m32.124632929s
		wait 2m25.782985957s
		wait 23m10.41541598s
		wait 2m42.299433873s
		to-activation a
		wait 7m22.494224114s`,
}}

// TestScheduleInvariantsRegressions replays the kept counterexamples under
// every invariant of TestScheduleInvariantsOverHistories.
func TestScheduleInvariantsRegressions(t *testing.T) {
	historyLua = &luaChecker{luajit: findLuaJIT(), dir: t.TempDir()}
	defer func() { historyLua = nil }()
	for _, tc := range historyRegressions {
		t.Run(tc.name, func(t *testing.T) {
			var ops []histOp
			for _, line := range strings.Split(tc.ops, "\n") {
				op, err := parseHistOp(strings.TrimSpace(line))
				if err != nil {
					t.Fatal(err)
				}
				ops = append(ops, op)
			}
			if v := newHistory(t, tc.seed, ops).run(); v != "" {
				t.Fatalf("seed %d: %s", tc.seed, v)
			}
		})
	}
}

// TestParseHistOpRoundTrip: every operation the generator draws reads back
// as itself, with or without the index a failure message prints before it,
// so a pasted shrunk history replays the same operations.
func TestParseHistOpRoundTrip(t *testing.T) {
	for _, op := range genHistory(rand.New(rand.NewPCG(7, 18)), 2000) {
		for _, line := range []string{op.String(), fmt.Sprintf("  %3d  %s", 17, op)} {
			got, err := parseHistOp(line)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != op.String() {
				t.Fatalf("parse(%q) = %q", line, got)
			}
		}
	}
}
