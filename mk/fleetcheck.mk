# Fleet check (issue 11): fleetcheck/ and cmd/ticketkeys-fleetcheck.

.PHONY: fleetcheck test-fleetcheck test-fleetcheck-e2e bench-fleetcheck

fleetcheck: ## build the fleet check command into bin/
	$(GO) build -o $(BIN_DIR)/ticketkeys-fleetcheck ./cmd/ticketkeys-fleetcheck

test-fleetcheck: ## unit tests (race) of fleetcheck/ (real Go, nginx and HAProxy servers) and its command
	$(GO) test -race -count=1 ./fleetcheck/ ./cmd/ticketkeys-fleetcheck/

test-fleetcheck-e2e: ## e2e: the fleet check against Go, nginx (Lua) and HAProxy fleets through real rotations, a stale node, a purge
	@VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	$(GO) test -tags e2e -count=1 -timeout 15m -run '^TestFleetCheck' -v ./e2e/

bench-fleetcheck: ## go test benchmark: one fleet-check round against 100 Go nodes in one process
	$(GO) test -run '^$$' -bench '^BenchmarkCheck100GoNodes$$' -benchtime 3x -count=1 ./fleetcheck/

# `make bench` times the fleet check too (before the benchmark report).
bench: bench-fleetcheck
