package nginx_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/servertest"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/nginx/luatest"
)

// engineMaxKeys is the most keys the engine ever serves in one window (its 256-key cap).
const engineMaxKeys = 256

// TestEngineSizedWindowsInstall proves (issue 18 item 10) that every window size the engine can serve
// installs in every worker and block and is used: 26 keys (rotation_period=1h retain=24h, which the
// engine accepts) and the engine's cap of 256, with 80- and 48-byte keys, each resuming across two
// nginx instances in TLS 1.2 and 1.3; one key more than the engine can serve is refused by name.
func TestEngineSizedWindowsInstall(t *testing.T) {
	eachNginx(t, testEngineSizedWindowsInstall)
}

func testEngineSizedWindowsInstall(t *testing.T, build *servertest.NginxBuild) {
	cert := testcert.New(t, testcert.ECDSAP256)
	for _, size := range []int{80, 48} {
		t.Run(fmt.Sprintf("%dbytes", size), func(t *testing.T) {
			window := newWindow(t, luatest.NewKeys(t, 1, size))
			a := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert, Capacity: 4, Stream: true})
			b := luatest.Start(t, luatest.Config{Nginx: build, Window: window, Cert: cert, Capacity: 4, Stream: true})
			for _, n := range []int{26, engineMaxKeys} {
				keys := luatest.NewKeys(t, n, size)
				luatest.WriteWindow(t, window, keys)
				ids := luatest.IDs(keys)
				a.WaitIDs(t, ids, 10*time.Second)
				b.WaitIDs(t, ids, 10*time.Second)
				for _, v := range versions {
					if !luatest.CrossResumes(t, cert, v.v, a.HTTPS, b.HTTPS, false) {
						t.Errorf("%d keys %s: https ticket from A did not resume on B", n, v.name)
					}
					if !luatest.CrossResumes(t, cert, v.v, b.Stream, a.Stream, true) {
						t.Errorf("%d keys %s: stream ticket from B did not resume on A", n, v.name)
					}
				}
				t.Logf("%d-byte keys, window of %d: installed in every worker and block, cross-instance resumption", size, n)
			}
			if errs := errorLines(a.Proc.Log() + b.Proc.Log()); len(errs) > 0 {
				t.Errorf("unexpected errors:\n%s", strings.Join(errs, "\n"))
			}
		})
	}
}
