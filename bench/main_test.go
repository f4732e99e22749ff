package bench

import (
	"os"
	"testing"
)

// TestMain lets the test binary act as a serve child (see StartChild), so
// the child protocol is tested with a real separate process.
func TestMain(m *testing.M) {
	if os.Getenv(EnvChild) == "1" && len(os.Args) > 1 && os.Args[1] == "serve" {
		os.Exit(ServeMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}
