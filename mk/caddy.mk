# Caddy key source (issue 12): the tls.stek.ticketkeys module in caddy/ (a Go module of its own, so it is
# outside the root module's ./... and Caddy's dependency graph stays out of the plugin's go.mod), the
# cached Caddy build with it (scripts/caddy-build.sh) and its tests. The e2e test is e2e/caddy_test.go,
# so `make test-e2e` (and `make test`) runs it; it builds Caddy through scripts/caddy-build.sh unless
# CADDY_BIN is set.

.PHONY: caddy test-caddy vet-caddy test-caddy-e2e caddy-compare

caddy: ## build (or find in the cache) Caddy with the tls.stek.ticketkeys module and print its path
	@scripts/caddy-build.sh

test-caddy: ## unit tests (race) of the Caddy module in caddy/
	cd caddy && $(GO) test -race -count=1 ./...

vet-caddy: ## go vet of the Caddy module in caddy/
	cd caddy && $(GO) vet ./...

# The Caddy module's unit tests and vet run with the rest, and `make bench` includes the comparison
# with Caddy's distributed key source (results/caddy-compare.md).
test-unit: test-caddy
vet: vet-caddy
bench: caddy-compare

test-caddy-e2e: ## e2e: 3 Caddy with tls.stek.ticketkeys through rotations, reloads and a Vault outage, vs Caddy's distributed keys
	@VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; CADDY_BIN=$$(scripts/caddy-build.sh); export CADDY_BIN; \
	$(GO) test -tags e2e -count=1 -timeout 10m -run '^TestCaddy' -v ./e2e/

caddy-compare: ## run the Caddy e2e test; print and write (results/caddy-compare.md) ticketkeys vs Caddy's distributed keys
	@mkdir -p $(BIN_DIR); VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; CADDY_BIN=$$(scripts/caddy-build.sh); export CADDY_BIN; \
	CADDY_COMPARE_OUT=$(abspath $(or $(BENCH_OUT),results))/caddy-compare.md; export CADDY_COMPARE_OUT; \
	$(GO) test -tags e2e -count=1 -timeout 10m -run '^TestCaddyTicketkeys$$' -v ./e2e/ | tee $(BIN_DIR)/caddy-compare.log | grep -E 'caddy-compare:|^(--- |ok|FAIL)'
