package nginx_test

import "github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"

// ValgrindLines are the nginx builds `make valgrind-nginx` runs (valgrind_test.go): Debian's and the
// newest OpenResty line.
var ValgrindLines = []string{servertest.DebianName, "openresty-" + servertest.OpenRestyLines[len(servertest.OpenRestyLines)-1]}

// layoutOf is the layout row each tested nginx version must select (checked against the running
// module by TestInstallsWindowInEveryWorker and against the headers by TestLayoutMatchesHeaders).
var layoutOf = map[string]string{
	"1.22.1": "nginx-1.21.4",
	"1.25.3": "nginx-1.25.1",
	"1.27.1": "nginx-1.25.5",
	"1.29.2": "nginx-1.29.1",
	"1.31.1": "nginx-1.29.1",
}
