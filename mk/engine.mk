# The secrets engine (root package): its unit tests and the keyring cache stress test (issue 9).

.PHONY: test-engine stress-engine

STRESS_ROUNDS ?= 300000

test-engine: ## unit tests (race) of the engine, including the cache stress test at its default size
	$(GO) test -race -count=1 .

stress-engine: ## the keyring cache stress test (race) at STRESS_ROUNDS operations (default 300000, about a minute)
	$(GO) test -race -count=1 -run '^TestCacheNeverResurrectsKeys$$' -v -timeout 20m . -stress.rounds=$(STRESS_ROUNDS)
