# Releases (issue 22): scripts/release.sh writes dist/ (binaries for linux/amd64 and linux/arm64, Debian
# packages, the Lua module as a LuaRocks rock and in OPM's layout, SHA256SUMS), reproducibly and offline.

.PHONY: release test-release

release: ## build a release into dist/: make release VERSION=vX.Y.Z (must equal ticketkeys.Version in version.go)
	@[[ -n "$(VERSION)" ]] || { echo "make release: say which version: make release VERSION=vX.Y.Z (ticketkeys.Version in version.go)" >&2; exit 1; }
	@scripts/release.sh $(VERSION)
