package fleetcheck

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ticketkeys/vault-plugin-secrets-ticketkeys/internal/testcert"
)

// TestTicketLifetimeAgainstTheWindow: nginx's default ssl_session_timeout
// (5 minutes) is the lifetime hint of its tickets, and OpenSSL refuses a
// ticket whose session is older: whatever the keyring retains, its users
// resume for 5 minutes. The report gives each node's hint in each TLS
// version and its effective resumption window, and flags the node whose hint
// is shorter than rotation_period.
func TestTicketLifetimeAgainstTheWindow(t *testing.T) {
	cert := testcert.New(t, testcert.ECDSAP256)
	s := newSchedule(t, FormatNginx, 80, 2, time.Now().Add(-30*time.Minute), time.Hour, 12*time.Hour)
	addr := startNginxTickets(t, cert, s.keys[0], s.keys[1])
	r := check(t, newChecker(t, s, cert, []string{addr}, nil))
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(js.String(), `"ticket_lifetime_seconds": 300`); got != 3 || !strings.Contains(js.String(), `"effective_resumption_seconds": 300`) {
		t.Errorf("nginx's 300 s lifetime hint appears %d times in the report; want once per TLS version and once for the node, with its effective window:\n%s", got, js.String())
	}
	if tab := table(t, r); !strings.Contains(tab, addr+": ticket lifetime 5m0s is shorter than rotation_period 1h0m0s") ||
		!strings.Contains(tab, "effective resumption window 5m0s of the keyring's 13h0m0s") {
		t.Errorf("the table does not flag the 5-minute lifetime against the keyring's window:\n%s", tab)
	}

	// Go's crypto/tls sends 7 days in TLS 1.3 and no hint in TLS 1.2: not flagged.
	gs, servers, gcert := goFleet(t, 1)
	r = check(t, newChecker(t, gs, gcert, addrs(servers), nil))
	if n := r.Nodes[0]; n.Versions[1].TicketLifetime != 7*24*3600 || n.Versions[0].TicketLifetime != 0 || len(r.Warnings) != 0 {
		t.Errorf("Go node: lifetimes %v / %v s, warnings %v; want none in TLS 1.2, 7 days in TLS 1.3, no warning", n.Versions[0].TicketLifetime, n.Versions[1].TicketLifetime, r.Warnings)
	}
}
