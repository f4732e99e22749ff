//go:build !race

package ticketkeys

// raceEnabled: the race detector slows the harness about tenfold (see history_test.go's sizing).
const raceEnabled = false
