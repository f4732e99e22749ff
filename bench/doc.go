// Package bench is the harness behind `make bench`: it measures, in one run
// on the machine at hand, how well a cluster of Go TLS servers resumes
// sessions with ticketkeys beside its baselines, what the client's hook costs
// per resumed handshake, what a keyring read costs Vault (against KV v2
// built in and run as an external plugin, with where the time goes inside
// Vault), the time to first byte behind latency-injecting proxies
// (LatencyProxy) at real round-trip times, and how one Vault serves a fleet
// of 1,000 nodes, and the same questions for nginx: 3 real nginx nodes
// (Debian's and an OpenResty line, internal/servertest) with their own
// keys, with ticketkeys' Lua module, and with rotation by reload, including
// what a reload does to long-lived connections (nginx.go, nginx_run.go); it
// writes a markdown report and PNG plots (see docs/benchmark.md).
//
// The nginx nodes are separate processes started by PID through
// internal/servertest; their CPU is read from /proc (NginxCPU: the
// masters' and all their workers', exited ones included).
//
// The server nodes of each run live in a child process of the harness (the
// same binary, subcommand "serve"), so that their CPU is read from that
// process's own accounting (getrusage RUSAGE_SELF, taken by the child at the
// start and end of the load) and never includes the load client's CPU. Vault
// is a real server with the plugin built from this checkout, started through
// internal/vaulttest. Everything listens on 127.0.0.1 at kernel-chosen ports,
// every loop is bounded in count and in time, and every process the harness
// starts is stopped by its PID.
//
// Nothing here logs or reports key material: children and reports carry
// counts, times, states and CPU figures only.
package bench
