# nginx without reload: resty.ticketkeys (nginx/lib), its Agent files (bootstrap/agent/nginx-lua), its tests
# and its valgrind run, on Debian's nginx and on the OpenResty lines built from the source kit
# (../shared/openresty-src, or OPENRESTY_SRC) by scripts/openresty-build.sh.

.PHONY: test-nginx-lua valgrind-nginx test-nginx-lua-e2e openresty openresty-ensure layoutprobe arm64-sysroot-ensure

openresty: ## build every OpenResty line (1.25.3 1.27.1 1.29.2 1.31.1) into ~/.cache/ticketkeys/openresty-LINE (once; needs the source kit)
	@scripts/openresty-build.sh all

# openresty-ensure builds the missing OpenResty lines before the tests run (so no cold build happens
# inside a go test timeout). Without the kit it says so and goes on (the OpenResty subtests then skip),
# except under CI=true, where the kit is required.
openresty-ensure:
	@start=$$SECONDS; rc=0; scripts/openresty-build.sh all >/dev/null || rc=$$?; \
	if [[ $$rc -eq 3 && "$${CI:-}" != true ]]; then echo "openresty: no source kit; the OpenResty subtests will skip"; \
	elif [[ $$rc -ne 0 ]]; then exit $$rc; \
	else echo "openresty: all lines built ($$((SECONDS-start))s)"; fi

test-unit test-e2e test-nginx-lua test-nginx-lua-e2e valgrind-nginx: openresty-ensure

# arm64-sysroot-ensure unpacks Debian's arm64 nginx 1.22.1 (http Lua and stream modules and what they need)
# into the cache once per machine (scripts/arm64-sysroot.sh: apt with a private state directory, about 40
# packages, ~47 MB); the nginx package's TestArm64* tests run it under qemu-aarch64-static (qemu-user-static).
arm64-sysroot-ensure: deps
	@scripts/ensure-built.sh arm64-sysroot scripts/arm64-sysroot.sh

test-unit test-nginx-lua: arm64-sysroot-ensure

layoutprobe: openresty-ensure ## print the layout row resty.ticketkeys needs, from the headers of Debian's nginx and of each OpenResty line
	@trees=(); for l in 1.25.3 1.27.1 1.29.2 1.31.1; do p=$$(scripts/openresty-build.sh $$l 2>/dev/null) && trees+=("$$p/nginx-headers"); done; \
	$(GO) run ./nginx/layoutprobe/cmd/ticketkeys-layoutprobe -debian "$${trees[@]}"

test-nginx-lua: ## resty.ticketkeys on Debian's nginx and every OpenResty line (no Vault): layout vs headers, install, resumption, rotation, bad files, guards
	$(GO) test -count=1 -timeout 20m ./nginx/...

valgrind-nginx: ## one nginx (master_process off) under valgrind memcheck, Debian's and the newest OpenResty line: grow, shrink, exit; 0 errors
	$(GO) vet -tags valgrind ./nginx/
	$(GO) test -count=1 -tags valgrind -run '^TestValgrindNginx$$' -v -timeout 30m ./nginx/

test-nginx-lua-e2e: ## e2e: real Vault + Agent + 3 nginx (2 workers each) with resty.ticketkeys through real rotations, and 2 nodes on the schedule with the Agents stopped, per nginx build
	@VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	$(GO) test -tags e2e -count=1 -timeout 20m -run '^TestNginxLua' -v ./e2e/
