# The secrets engine (root package): its unit tests, the keyring cache stress test (issue 9) and the
# schedule invariants over generated histories (issue 18, history_test.go).

.PHONY: test-engine stress-engine stress-engine-cache stress-engine-history

STRESS_ROUNDS ?= 300000
# HISTORY_OPS operations in histories of HISTORY_LEN, with occasional waits (and jumps to an activation) of
# up to HISTORY_LONGWAIT; a failure prints its seed and a shrunk history.
HISTORY_OPS      ?= 1000000
HISTORY_LEN      ?= 1000
HISTORY_LONGWAIT ?= 30m

test-engine: ## unit tests (race) of the engine, including the cache stress test and 20,000 history operations
	$(GO) test -race -count=1 .

stress-engine: stress-engine-cache stress-engine-history ## both engine stress tests at their stress sizes

stress-engine-cache: ## the keyring cache stress test (race) at STRESS_ROUNDS operations (default 300000, about a minute)
	$(GO) test -race -count=1 -run '^TestCacheNeverResurrectsKeys$$' -v -timeout 20m . -stress.rounds=$(STRESS_ROUNDS)

# Without -race: make test already runs the same harness under the race detector (20,000 operations), and
# -race would make a million operations take hours.
stress-engine-history: ## the schedule invariants over HISTORY_OPS generated operations (default 1,000,000, about 3 minutes on 2 cores)
	@start=$$SECONDS; $(GO) test -count=1 -run '^TestScheduleInvariantsOverHistories$$' -v -timeout 4h . \
		-history.ops=$(HISTORY_OPS) -history.len=$(HISTORY_LEN) -history.longwait=$(HISTORY_LONGWAIT) -history.timeout=3h; \
	echo "stress-engine-history: $$((SECONDS-start))s"
