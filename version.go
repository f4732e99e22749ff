package ticketkeys

// Version is the plugin's semantic version. Vault requires the version given at
// `vault plugin register -version=...` to equal what the running plugin reports,
// so the bootstrap scripts and the end-to-end harness read it from here.
//
// It is a variable only so that a build can stamp another version without
// editing this file, for a side-by-side upgrade or a rollback test:
//
//	go build -ldflags "-X github.com/ticketkeys/vault-plugin-secrets-ticketkeys.Version=v0.2.1-rc1" ./cmd/vault-plugin-secrets-ticketkeys
//
// Register such a build with that same version (bootstrap/register.sh -v). Nothing
// assigns it at run time.
var Version = "v0.2.0"
