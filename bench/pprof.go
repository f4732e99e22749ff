package bench

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/hashicorp/vault/api"
)

// ProfileVaultDuring takes a CPU profile of the Vault server
// (sys/pprof/profile, which needs root) for d while readers load target
// through c, writes it to path, and returns `go tool pprof -top` of it (the
// heaviest functions by own time; empty when the go tool is not at hand).
// The plugin processes are not in it: their share is the plugin CPU of the
// read-cost table.
func ProfileVaultDuring(ctx context.Context, root, c *api.Client, target ReadTarget, concurrency int, d time.Duration, path string) (string, error) {
	secs := max(int(d/time.Second), 1)
	load := make(chan ReadCost, 1)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		load <- MeasureReads(lctx, c, target, concurrency, time.Duration(secs)*time.Second+2*time.Second, 10000000)
	}()
	time.Sleep(300 * time.Millisecond) // the readers are up
	resp, err := root.Logical().ReadRawWithDataWithContext(ctx, "sys/pprof/profile", url.Values{"seconds": {strconv.Itoa(secs)}})
	cancel()
	lr := <-load
	if err != nil {
		return "", fmt.Errorf("sys/pprof/profile: %w", err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return "", fmt.Errorf("save profile %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if lr.Reads == 0 {
		return "", fmt.Errorf("no successful read of %s while profiling (errors %d: %s)", target.Path, lr.Errors, lr.FirstError)
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=30", path).Output()
	if err != nil {
		return "", nil // the profile is saved; its summary is optional
	}
	return string(out), nil
}
