# Benchmark (issue 5): bench/ and its harness bench/cmd/ticketkeys-bench. Owned by the benchmark part.
#
# `make bench` writes results/benchmark.md, results/benchmark.json and
# results/resumption.png (docs/benchmark.md explains them). The harness keeps
# to BENCH_BUDGET (steps that no longer fit are skipped and listed in the
# report); BENCH_TIMEOUT is the hard stop (SIGTERM: the harness stops its
# processes by PID and writes what it measured). Budget + build stay under
# 15 minutes on 2 cores (the nginx rows, last, take about 3 of the 14.5). The external KV plugin of the read-cost comparison
# is built once by tools/kvplugin/build.sh (cached like Vault).

.PHONY: bench bench-quick bench-decrypt bench-engine bench-report test-bench

BENCH_OUT     ?= results
BENCH_FLAGS   ?=
BENCH_BUDGET  ?= 14m30s
BENCH_TIMEOUT ?= 885s
BENCH_BIN     := $(BIN_DIR)/ticketkeys-bench

$(BENCH_BIN): FORCE_BENCH_BUILD
	$(GO) build -o $@ ./bench/cmd/ticketkeys-bench

.PHONY: FORCE_BENCH_BUILD
FORCE_BENCH_BUILD:

bench: $(BENCH_BIN) ## benchmark: cluster resumption, hook cost, Vault read cost, time to first byte, fleet scale, nginx rows -> results/benchmark.md + PNGs (<= 15 min)
	@start=$$SECONDS; VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	KV_PLUGIN_BIN=$$(tools/kvplugin/build.sh); export KV_PLUGIN_BIN; \
	timeout --kill-after=20s $(BENCH_TIMEOUT) $(BENCH_BIN) -out $(BENCH_OUT) -budget $(BENCH_BUDGET) $(BENCH_FLAGS); \
	echo "bench: $$((SECONDS-start))s; report in $(BENCH_OUT)/benchmark.md"

bench-quick: $(BENCH_BIN) ## benchmark smoke run (about 4.5 minutes): every part, short durations -> results/quick/
	@VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	KV_PLUGIN_BIN=$$(tools/kvplugin/build.sh); export KV_PLUGIN_BIN; \
	timeout --kill-after=20s 450s $(BENCH_BIN) -quick -out $(BENCH_OUT)/quick $(BENCH_FLAGS)

bench-decrypt: ## go test benchmark of ticket decryption by window size (BenchmarkDecryptTicket/window=1..14)
	$(GO) test -run '^$$' -bench '^BenchmarkDecryptTicket$$' -benchmem -count=1 ./bench/

bench-engine: ## go test benchmarks of a 14-key window read per format: the engine alone, and through the SDK's plugin gRPC transport (no Vault)
	$(GO) test -run '^$$' -bench '^BenchmarkReadWindow(PluginHop)?$$' -benchmem -count=1 .

bench-report: $(BENCH_BIN) ## rewrite results/benchmark.md and the PNG from results/benchmark.json (no measurement)
	$(BENCH_BIN) -from-json $(BENCH_OUT)/benchmark.json -out $(BENCH_OUT)

test-bench: ## unit tests (race) of bench/
	$(GO) test -race -count=1 ./bench/...
