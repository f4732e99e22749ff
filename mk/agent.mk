# Vault Agent templates for nginx, HAProxy and Envoy (bootstrap/agent) and the HAProxy push command.

.PHONY: agent-examples agent-push test-agent test-agent-e2e

agent-examples: ## regenerate bootstrap/agent/examples from bootstrap/agent's templates
	$(GO) test -count=1 ./bootstrap/agent -update

agent-push: ## build the HAProxy runtime push command into bin/
	$(GO) build -o $(BIN_DIR)/ticketkeys-haproxy-push ./cmd/ticketkeys-haproxy-push

test-agent: ## unit tests of the Agent templates, the push command (real HAProxy) and servertest (real nginx, HAProxy)
	$(GO) test -count=1 ./bootstrap/agent/... ./cmd/ticketkeys-haproxy-push/ ./internal/servertest/

test-agent-e2e: ## e2e: real Vault + Agent feeding 3 nginx, 3 HAProxy and an Envoy SDS file through real rotations
	@VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	$(GO) test -tags e2e -count=1 -timeout 15m -run '^TestAgent(Nginx|HAProxy|Envoy)' -v ./e2e/
