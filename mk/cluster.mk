# Production Vault (issue 14): a 3-node Raft cluster with TLS (internal/vaulttest/cluster.go), its
# scenarios under load (e2e/cluster*_test.go), scripts/dev-cluster.sh and docs/production.md.
#
# The harness test (TestCluster) and the scenarios TestClusterFailover (1, 5, 6), TestClusterPluginUpgrade
# (3), TestClusterSnapshotRestore (4), TestClusterClockSkew (5, clock skew) and TestDevClusterScript run in
# `make test`; TestClusterFullRestart (2) only with TICKETKEYS_E2E_CLUSTER_ALL=1 (test-cluster-all).

.PHONY: dev-cluster test-cluster test-cluster-all

CLUSTER_RUN ?= ^(TestCluster|TestDevClusterScript)

dev-cluster: ## run a 3-node Vault cluster (Raft, TLS) on 127.0.0.1 with the plugin registered; Ctrl-C stops it
	@scripts/dev-cluster.sh

test-cluster: ## e2e: the cluster harness and the cluster scenarios of make test (failover, seal, purge, upgrade, restore)
	@start=$$SECONDS; VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; \
	$(GO) test -tags e2e -count=1 -timeout 20m -run '$(CLUSTER_RUN)' -v ./e2e/ ./internal/vaulttest/; \
	echo "test-cluster: $$((SECONDS-start))s"

test-cluster-all: ## e2e: every cluster scenario, including the full restart of all three nodes
	@start=$$SECONDS; VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN TICKETKEYS_E2E_CLUSTER_ALL=1; \
	$(GO) test -tags e2e -count=1 -timeout 25m -run '$(CLUSTER_RUN)' -v ./e2e/ ./internal/vaulttest/; \
	echo "test-cluster-all: $$((SECONDS-start))s"
