# Go client package (client/, client/promcollector), internal/resumption, internal/testcert and the example server.

.PHONY: test-client fuzz-client example-server test-client-e2e

FUZZTIME ?= 30s

test-client: ## unit tests (race) of client/, internal/resumption, internal/testcert and client/promcollector
	$(GO) test -race -count=1 ./client/... ./internal/resumption/ ./internal/testcert/ ./cmd/ticketkeys-example-server/

fuzz-client: ## fuzz the client's window decoding and validation for FUZZTIME (default 30s)
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeWindow$$' -fuzztime $(FUZZTIME) -parallel 1 ./client/

example-server: ## build cmd/ticketkeys-example-server into bin/
	$(GO) build -o $(BIN_DIR)/ticketkeys-example-server ./cmd/ticketkeys-example-server

test-client-e2e: ## e2e: three Go servers with Sources through real rotations, a Vault outage and recovery, purge propagation (ttl, max_read_ttl, Refresh), the example server
	@VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	$(GO) test -tags e2e -count=1 -timeout 15m -run '^TestGoClient' -v ./e2e/
