// Command ticketkeys-haproxy-push applies a rendered HAProxy tls-ticket-keys file to a running HAProxy
// through its admin socket, without a reload.
//
// Vault Agent renders the file (previous, current, next: HAProxy's order) and runs this command after each
// change. The command reads `show tls-keys <ref>` (HAProxy's ring, oldest first, the middle key encrypting),
// works out the shortest suffix of the file that is missing from the ring, and sends only those keys, in
// order, with `set ssl tls-key <ref> <base64>`. Each such command makes the sent key the decrypt-only "next",
// promotes the old next to encrypting and drops the oldest, so after the run the ring equals the file: the
// file's middle key encrypts. Running it again changes nothing (idempotent). The file stays the source of
// truth for the next start or reload of HAProxy, which reads it at configuration load.
//
// Usage:
//
//	ticketkeys-haproxy-push -socket /run/haproxy/admin.sock -file /etc/haproxy/tls-ticket-keys [-pidfile /run/haproxy.pid] [-ref REF]
//	ticketkeys-haproxy-push -socket ... -file ... -at-schedule /etc/haproxy/ticketkeys/web.schedule
//
// With -at-schedule FILE (the schedule file Agent renders: every key of the window with its not_before,
// encrypt_until and not_after), the command first computes the ring the current instant requires from the
// times (the engine's rule), rewrites -file when it differs, then pushes: run it from a systemd timer every
// second and keys switch and an expired key leaves HAProxy within about a second of its instant, whether
// or not Agent or Vault is reachable. When no published key may encrypt any more (Agent away longer than
// publish_ahead), a node-local random key encrypts instead of a key past its encrypt_until.
//
// The socket needs `stats socket PATH level admin`. REF defaults to the file path and must be spelled as in
// the `tls-ticket-keys` argument of the `bind` lines. Output and errors name key ids (hex of the 16-byte key
// name, which is public: it travels in every ticket) and never key material. Exit status 0 means the ring
// equals the file after the run, or that HAProxy is verifiably not running (the socket does not answer and
// the -pidfile is absent or names no live process: HAProxy will load the file when it starts). A socket that
// does not answer without such proof is an error, because a mistyped -socket looks the same and would
// otherwise report success while no key is ever pushed. The command tries up to -attempts times before
// failing, because Agent runs it only once per change. The socket can dump every key (`show tls-keys`):
// keep it root-only (`stats socket ... mode 600 level admin`).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	socket := flag.String("socket", "", "HAProxy admin socket (stats socket ... level admin); required")
	file := flag.String("file", "", "tls-ticket-keys file rendered by Vault Agent; required")
	ref := flag.String("ref", "", "HAProxy key reference (the tls-ticket-keys file name as written in the bind line); default: -file")
	pidFile := flag.String("pidfile", "", "HAProxy's pid file (Debian's unit: /run/haproxy.pid); when the socket does not answer, exit 0 only if it is absent or names no live process")
	timeout := flag.Duration("timeout", 10*time.Second, "bound on each admin-socket exchange")
	attempts := flag.Int("attempts", 3, "tries in all before giving up (Agent runs the command only when the file changes)")
	atSchedule := flag.String("at-schedule", "", "schedule file with times rendered by Vault Agent: compute the ring the current instant requires, rewrite -file, then push")
	flag.Parse()
	if *socket == "" || *file == "" {
		fmt.Fprintln(os.Stderr, "ticketkeys-haproxy-push: -socket and -file are required")
		flag.Usage()
		os.Exit(2)
	}
	if *ref == "" {
		*ref = *file
	}
	opts := Options{Socket: *socket, File: *file, Ref: *ref, PIDFile: *pidFile, Timeout: *timeout, Attempts: *attempts}
	if *atSchedule != "" {
		srep, err := RunSchedule(opts, *atSchedule, time.Now())
		fmt.Println("ticketkeys-haproxy-push: " + srep.String())
		if errors.Is(err, ErrNotRunning) {
			fmt.Printf("ticketkeys-haproxy-push: ref %s: %v; HAProxy will load the file when it starts\n", *ref, err)
			return
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "ticketkeys-haproxy-push: %v\n", err)
			os.Exit(1)
		}
		fmt.Println("ticketkeys-haproxy-push: " + srep.Push.String())
		return
	}
	rep, err := PushWithRetry(opts)
	if errors.Is(err, ErrNotRunning) {
		// HAProxy loads the file when it starts: nothing to do, and not an error for Vault Agent.
		fmt.Printf("ticketkeys-haproxy-push: ref %s: %v; HAProxy will load the file when it starts\n", *ref, err)
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ticketkeys-haproxy-push: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("ticketkeys-haproxy-push: " + rep.String())
}
