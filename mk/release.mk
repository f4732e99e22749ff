# Releases (issue 22): scripts/release.sh writes dist/ (binaries for linux/amd64 and linux/arm64, Debian
# packages, the Lua module as a LuaRocks rock and in OPM's layout, SHA256SUMS), reproducibly and offline.

.PHONY: release test-release

release: ## build a release into dist/: make release VERSION=vX.Y.Z (must equal ticketkeys.Version in version.go)
	@[[ -n "$(VERSION)" ]] || { echo "make release: say which version: make release VERSION=vX.Y.Z (ticketkeys.Version in version.go)" >&2; exit 1; }
	@scripts/release.sh $(VERSION)

# The release tests: TestReleaseIsReproducible (tag release: two releases, identical bytes), the release
# of ticketkeys.Version into dist/, then TestGuideNginxLuaInstalled installs
# its Debian package and rock on this machine (as root) and walks docs/nginx-lua.md from /usr/share/ticketkeys.
test-release: deps vault-ensure ## build dist/ (VERSION = ticketkeys.Version) and run the install test: the .deb and the rock installed, docs/nginx-lua.md walked from /usr/share/ticketkeys
	@start=$$SECONDS; $(GO) test -tags release -count=1 -timeout 40m -run '^TestReleaseIsReproducible$$' ./scripts/; \
	echo "test-release: two releases identical ($$((SECONDS-start))s)"; \
	version=$$(sed -n 's/^\(const\|var\) Version = "\(v[^"]*\)".*/\2/p' version.go); scripts/release.sh "$$version"; \
	VAULT_BIN=$$(scripts/vault-build.sh); export VAULT_BIN; TICKETKEYS_DIST=$(abspath dist); export TICKETKEYS_DIST; \
	$(GO) test -tags e2e -count=1 -timeout 10m -run '^TestGuideNginxLuaInstalled$$' -v ./e2e/
