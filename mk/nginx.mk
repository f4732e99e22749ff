# nginx without reload: resty.ticketkeys (nginx/lib), its Agent files (bootstrap/agent/nginx-lua), its tests
# and its valgrind run.

.PHONY: test-nginx-lua valgrind-nginx test-nginx-lua-e2e

test-nginx-lua: ## resty.ticketkeys against real Debian nginx (no Vault): install, resumption, rotation, bad files, guards
	$(GO) test -count=1 ./nginx/...

valgrind-nginx: ## one nginx (master_process off) under valgrind memcheck: grow, shrink, exit; fails on invalid reads/writes
	$(GO) vet -tags valgrind ./nginx/
	$(GO) test -count=1 -tags valgrind -run '^TestValgrindNginx$$' -v -timeout 20m ./nginx/

test-nginx-lua-e2e: ## e2e: real Vault + Agent + 3 nginx (2 workers each) with resty.ticketkeys through real rotations
	@VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	$(GO) test -tags e2e -count=1 -timeout 15m -run '^TestNginxLua' -v ./e2e/
