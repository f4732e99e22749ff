package bench

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// ProfileParts are the parts of a Vault server's request handling that the
// report breaks a read's CPU into: each is the cumulative CPU of one
// function (with everything it calls) in the pinned Vault version. Parts
// nest ("of which"): they do not add up.
var ProfileParts = []struct {
	Name, Func string
}{
	{"HTTP request handling, all (net/http conn.serve)", "net/http.(*conn).serve"},
	{"token lookup and ACL (Core.CheckToken)", "github.com/hashicorp/vault/vault.(*Core).CheckToken"},
	{"of which re-parsing the templated `default` policy (parseACLPolicyWithTemplating)", "github.com/hashicorp/vault/vault.parseACLPolicyWithTemplating"},
	{"routing to the mount (Router.routeCommon)", "github.com/hashicorp/vault/vault.(*Router).routeCommon"},
	{"of which the plugin gRPC hop, Vault side (backendGRPCPluginClient.HandleRequest)", "github.com/hashicorp/vault/sdk/plugin.(*backendGRPCPluginClient).HandleRequest"},
	{"of which a built-in engine's handler (framework.Backend.HandleRequest)", "github.com/hashicorp/vault/sdk/framework.(*Backend).HandleRequest"},
	{"audit entries: copy, hash, format (entryFormatter.Process)", "github.com/hashicorp/vault/audit.(*entryFormatter).Process"},
	{"of which HMAC of every string of the response (audit.hashResponse)", "github.com/hashicorp/vault/audit.hashResponse"},
	{"audit file write (FileSink.Process)", "github.com/hashicorp/vault/internal/observability/event.(*FileSink).Process"},
	{"response JSON encoding (http.respondLogical)", "github.com/hashicorp/vault/http.respondLogical"},
	{"garbage collection (runtime.gcBgMarkWorker)", "runtime.gcBgMarkWorker"},
}

// VaultProfile is a CPU profile of the Vault server during one path's reads.
type VaultProfile struct {
	// File is the saved profile, relative to the report.
	File string `json:"file"`
	// Seconds is the profile's length; Reads the reads served in it
	// (estimated from the load's rate).
	Seconds float64 `json:"seconds"`
	Reads   float64 `json:"reads"`
	// Total is the profile's CPU; Parts the cumulative CPU of each of
	// ProfileParts (by name), both per read.
	TotalPerRead time.Duration            `json:"total_per_read_ns"`
	PartsPerRead map[string]time.Duration `json:"parts_per_read_ns"`
	// Top is `go tool pprof -top` (heaviest functions by own time).
	Top string `json:"top,omitempty"`
}

// ProfileVaultDuring takes a CPU profile of the Vault server
// (sys/pprof/profile, which needs root) for d while readers load target
// through c, writes it to dir/file, and breaks it down with `go tool pprof`
// (Parts stay empty when the go tool is not at hand). The plugin processes
// are not in it: their share is the plugin CPU of the read-cost table.
func ProfileVaultDuring(ctx context.Context, root, c *api.Client, target ReadTarget, concurrency int, d time.Duration, dir, file string) (*VaultProfile, error) {
	path := filepath.Join(dir, file)
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
		return nil, fmt.Errorf("sys/pprof/profile: %w", err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return nil, fmt.Errorf("save profile %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if lr.Reads == 0 {
		return nil, fmt.Errorf("no successful read of %s while profiling (errors %d: %s)", target.Path, lr.Errors, lr.FirstError)
	}
	vp := &VaultProfile{File: file, Seconds: float64(secs), Reads: lr.PerSecond() * float64(secs), PartsPerRead: map[string]time.Duration{}}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=30", path).Output()
	if err != nil {
		return vp, nil // the profile is saved; its summary is optional
	}
	vp.Top = string(top)
	cum, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount=100000", path).Output()
	if err != nil {
		return vp, nil
	}
	total, byFunc := parsePprofTop(string(cum))
	if vp.Reads > 0 {
		vp.TotalPerRead = time.Duration(float64(total) / vp.Reads)
		for _, p := range ProfileParts {
			vp.PartsPerRead[p.Name] = time.Duration(float64(byFunc[p.Func]) / vp.Reads)
		}
	}
	return vp, nil
}

// parsePprofTop reads `go tool pprof -top -cum` output: the total CPU
// ("Total samples = 2.89s") and each function's cumulative CPU.
func parsePprofTop(s string) (total time.Duration, cum map[string]time.Duration) {
	cum = map[string]time.Duration{}
	for _, line := range strings.Split(s, "\n") {
		if _, after, ok := strings.Cut(line, "Total samples = "); ok {
			f := strings.Fields(after)
			if len(f) > 0 {
				total, _ = time.ParseDuration(f[0])
			}
			continue
		}
		// flat flat% sum% cum cum% name (the name may hold spaces).
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") || !strings.HasSuffix(f[4], "%") {
			continue
		}
		d, err := time.ParseDuration(f[3])
		if err != nil {
			continue
		}
		name := strings.Join(f[5:], " ")
		name = strings.TrimSuffix(name, " (inline)")
		cum[name] += d
	}
	return total, cum
}
