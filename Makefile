# ticketkeys: the front door. `make help` lists the targets.
#
# Each part of the project adds its own targets in mk/<part>.mk, included at
# the end of this file; this file only holds the targets everyone shares.

SHELL       := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO          ?= go
PLUGIN      := vault-plugin-secrets-ticketkeys
BIN_DIR     ?= bin
SERVER      ?= vault

# End-to-end tests run real Vault servers and Agents and wait for real
# rotations; E2E_FLAGS is added to their `go test` (for example -race, or
# -run TestEngine), E2E_TIMEOUT bounds the whole run.
#
# The e2e tests run without -race by default: the race detector already runs
# over the same client code in test-unit, and the e2e load loops (TLS
# handshakes against real servers on a 2-core machine) are CPU-bound, so -race
# there would cost most in the tests whose timing matters. Measured here: the
# engine's e2e tests take 37.7 s with -race against 33.6 s without; use
# `make test-e2e E2E_FLAGS=-race` to run everything with it.
E2E_TIMEOUT ?= 60m
E2E_FLAGS   ?=
E2E_PKGS    ?= ./e2e/... ./internal/vaulttest/...

.DEFAULT_GOAL := build

.PHONY: help build deps test test-unit test-e2e vault openbao dev clean fmt vet built vault-ensure caddy-ensure kvplugin-ensure nginx-debian-tree-ensure arm64-sysroot-ensure

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build the plugin binary into bin/
	$(GO) build -o $(BIN_DIR)/$(PLUGIN) ./cmd/$(PLUGIN)

test: ## all tests: unit tests with -race, the end-to-end tests, then the release built and installed (mk/release.mk)
	@start=$$SECONDS; $(MAKE) --no-print-directory test-unit; unit=$$((SECONDS-start)); \
	$(MAKE) --no-print-directory test-e2e; e2e=$$((SECONDS-start-unit)); \
	$(MAKE) --no-print-directory test-release; \
	echo "make test: unit $${unit}s, e2e $${e2e}s, release $$((SECONDS-start-unit-e2e))s, total $$((SECONDS-start))s"

deps: ## install the Debian packages the tests need (scripts/debian-packages.txt; as root, services not started)
	@scripts/debian-deps.sh

# Every cached dependency is built before the tests run, one progress line each (scripts/ensure-built.sh),
# so that no package's tests build anything heavy inside go test's timeout: Vault (cold ~19 min), Caddy with
# the module (~3.5 min), the KV plugin of the benchmark, Debian's configured nginx tree of the layout
# probe, the OpenResty lines (mk/nginx.mk, openresty-ensure) and the arm64 nginx sysroot the arm64 tests run under
# qemu (mk/nginx.mk, arm64-sysroot-ensure). `make built` builds them all.
built: vault-ensure caddy-ensure kvplugin-ensure nginx-debian-tree-ensure openresty-ensure arm64-sysroot-ensure ## build every cached dependency the tests use (once per machine), one line each

vault-ensure: deps
	@scripts/ensure-built.sh vault scripts/vault-build.sh

caddy-ensure: deps
	@scripts/ensure-built.sh caddy scripts/caddy-build.sh

kvplugin-ensure: deps
	@scripts/ensure-built.sh kvplugin tools/kvplugin/build.sh

nginx-debian-tree-ensure: deps
	@scripts/ensure-built.sh nginx-debian-tree bash -c '$(GO) run ./nginx/layoutprobe/cmd/ticketkeys-layoutprobe -debian >/dev/null && ls -d "$${TICKETKEYS_CACHE:-$$HOME/.cache/ticketkeys}"/nginx-debian-*-tree'

test-unit: deps nginx-debian-tree-ensure ## unit tests with the race detector
	@start=$$SECONDS; $(GO) test -race -count=1 ./...; echo "test-unit: $$((SECONDS-start))s"

# The e2e tests that run on every server (vaulttest.ForEachServer) run on the
# servers TICKETKEYS_SERVERS names (default vault,openbao); each is built once
# into the cache (scripts/vault-build.sh, scripts/openbao-build.sh).
TICKETKEYS_SERVERS ?= vault,openbao
export TICKETKEYS_SERVERS

test-e2e: deps vault-ensure caddy-ensure kvplugin-ensure ## end-to-end tests (tag e2e) against the pinned Vault and OpenBao binaries
	@start=$$SECONDS; VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	echo "test-e2e: VAULT_BIN=$$VAULT_BIN"; \
	if [[ ,$$TICKETKEYS_SERVERS, == *,openbao,* ]]; then \
		echo "test-e2e: building or finding OpenBao (scripts/openbao-build.sh)"; \
		BAO_BIN=$$(scripts/openbao-build.sh); export BAO_BIN; echo "test-e2e: BAO_BIN=$$BAO_BIN"; \
	fi; \
	$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) $(E2E_FLAGS) $(E2E_PKGS); \
	echo "test-e2e: $$((SECONDS-start))s"

vault: ## build (or find) the pinned Vault binary and print its path
	@scripts/vault-build.sh

openbao: ## build (or find) the pinned OpenBao binary and print its path
	@scripts/openbao-build.sh

dev: ## run a dev Vault (SERVER=openbao: OpenBao) on 127.0.0.1 with the plugin and a demo keyring
	@SERVER=$(SERVER) scripts/dev.sh

clean: ## remove build output
	rm -rf $(BIN_DIR)

fmt: ## gofmt every Go file
	gofmt -w $$(find . -name '*.go' -not -path './.git/*')

vet: ## go vet, with and without the e2e tag
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

include $(wildcard mk/*.mk)
