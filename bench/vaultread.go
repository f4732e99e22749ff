package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// ReadTarget is one Vault path read by MeasureReads.
type ReadTarget struct {
	// Name labels the target in the report.
	Name string
	// Path is the API path (without /v1/).
	Path string
	// Query holds query parameters (format=...).
	Query url.Values
	// Client, when set, reads this target instead of the shared client
	// (another token).
	Client *api.Client `json:"-"`
}

// ReadCost is the outcome of reading one target.
type ReadCost struct {
	Name string `json:"name"`
	Path string `json:"path"`
	// DataBytes is the JSON size of the response's data (measured on the
	// first read).
	DataBytes int `json:"data_bytes"`
	Reads     int `json:"reads"`
	Errors    int `json:"errors"`
	// FirstError is the first read error, if any (no key material: the
	// API client's errors carry status and Vault's error messages).
	FirstError string        `json:"first_error,omitempty"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	// VaultCPU and PluginCPU are the CPU time of the Vault server process
	// and of its plugin processes during this target's rounds (from /proc;
	// zero when not measured); AuditBytes what the audit device wrote.
	VaultCPU   time.Duration `json:"vault_cpu_ns"`
	PluginCPU  time.Duration `json:"plugin_cpu_ns"`
	AuditBytes int64         `json:"audit_bytes"`
	latencies  []time.Duration
}

// VaultCPUPerRead and PluginCPUPerRead divide the CPU by the successful
// reads (0 without reads).
func (r ReadCost) VaultCPUPerRead() time.Duration  { return perRead(r.VaultCPU, r.Reads) }
func (r ReadCost) PluginCPUPerRead() time.Duration { return perRead(r.PluginCPU, r.Reads) }

// AuditBytesPerRead is what the audit device wrote per read (request and
// response entries).
func (r ReadCost) AuditBytesPerRead() float64 {
	if r.Reads == 0 {
		return 0
	}
	return float64(r.AuditBytes) / float64(r.Reads)
}

func perRead(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

// PerSecond is successful reads per second.
func (r ReadCost) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Reads) / r.Elapsed.Seconds()
}

// merge adds o's reads to r (same target, another segment).
func (r *ReadCost) merge(o ReadCost) {
	if r.DataBytes == 0 {
		r.DataBytes = o.DataBytes
	}
	r.Reads += o.Reads
	r.Errors += o.Errors
	if r.FirstError == "" {
		r.FirstError = o.FirstError
	}
	r.Elapsed += o.Elapsed
	r.VaultCPU += o.VaultCPU
	r.PluginCPU += o.PluginCPU
	r.AuditBytes += o.AuditBytes
	r.latencies = append(r.latencies, o.latencies...)
	r.P50 = percentile(r.latencies, 50)
	r.P99 = percentile(r.latencies, 99)
}

// percentile returns the p-th percentile of d by the nearest-rank method
// (the smallest value with at least p% of the values at or below it), 0
// when d is empty. d is sorted in place.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := int(math.Ceil(p/100*float64(len(d)))) - 1
	return d[min(max(i, 0), len(d)-1)]
}

// DataSize returns the JSON size of the data of one read of target.
func DataSize(ctx context.Context, c *api.Client, target ReadTarget) (int, error) {
	s, err := c.Logical().ReadWithDataWithContext(ctx, target.Path, target.Query)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", target.Path, err)
	}
	if s == nil || s.Data == nil {
		return 0, fmt.Errorf("read %s: no data", target.Path)
	}
	b, err := json.Marshal(s.Data)
	if err != nil {
		return 0, fmt.Errorf("read %s: encode data: %w", target.Path, err)
	}
	return len(b), nil
}

// WriteKVOfSize writes a KV v2 secret at mount/data/name whose data (one
// field "value" of random base64 text) has exactly size bytes of JSON, and
// returns the path to read it. size must be at least 16.
func WriteKVOfSize(ctx context.Context, c *api.Client, mount, name string, size int) (string, error) {
	const overhead = len(`{"value":""}`)
	if size < overhead+4 {
		return "", fmt.Errorf("kv value size: must be >= %d bytes, got %d", overhead+4, size)
	}
	raw := make([]byte, size) // more than enough random bytes
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("kv value: random: %w", err)
	}
	value := base64.RawURLEncoding.EncodeToString(raw)[:size-overhead]
	_, err := c.Logical().WriteWithContext(ctx, mount+"/data/"+name, map[string]any{"data": map[string]any{"value": value}})
	if err != nil {
		return "", fmt.Errorf("write %s/data/%s: %w", mount, name, err)
	}
	return mount + "/data/" + name, nil
}

// MeasureReads reads target with concurrency workers for at most dur and at
// most maxReads reads in total, and returns the successful reads' count and
// latencies. The client should allow concurrency idle connections per host
// (see NewReadClient), so both targets use the same connection pattern.
func MeasureReads(ctx context.Context, c *api.Client, target ReadTarget, concurrency int, dur time.Duration, maxReads int) ReadCost {
	out := ReadCost{Name: target.Name, Path: target.Path}
	ctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var (
		mu      sync.Mutex
		started int
		wg      sync.WaitGroup
	)
	take := func() bool {
		mu.Lock()
		defer mu.Unlock()
		if started >= maxReads {
			return false
		}
		started++
		return true
	}
	t0 := time.Now()
	for w := 0; w < max(concurrency, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			reads, errs := 0, 0
			firstErr := ""
			for ctx.Err() == nil && take() {
				s := time.Now()
				sec, err := c.Logical().ReadWithDataWithContext(ctx, target.Path, target.Query)
				d := time.Since(s)
				if ctx.Err() != nil {
					break // cut by the deadline: neither a read nor an error
				}
				if err != nil || sec == nil {
					errs++
					if firstErr == "" {
						firstErr = fmt.Sprintf("%v (secret nil: %t)", err, sec == nil)
					}
					continue
				}
				reads++
				lat = append(lat, d)
			}
			mu.Lock()
			out.Reads += reads
			out.Errors += errs
			if out.FirstError == "" {
				out.FirstError = firstErr
			}
			out.latencies = append(out.latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	out.Elapsed = time.Since(t0)
	out.P50 = percentile(out.latencies, 50)
	out.P99 = percentile(out.latencies, 99)
	return out
}

// NewReadClient returns an API client for addr with token whose transport
// keeps up to conns idle connections to Vault (the default keeps
// GOMAXPROCS+1, which would make a concurrent benchmark open connections).
func NewReadClient(addr, token string, conns int) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault api config: %w", cfg.Error)
	}
	cfg.Address = addr
	cfg.Timeout = 10 * time.Second
	cfg.MaxRetries = 0
	if tr, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = max(conns, 1)
		tr.MaxIdleConns = max(conns, 1) * 2
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault api client for %s: %w", addr, err)
	}
	c.SetToken(token)
	c.ClearNamespace()
	return c, nil
}

// ReadComparison runs MeasureReads on a and b alternately (a, b, a, b, ...
// rounds segments each), so that both see the same machine load, and returns
// the merged results.
func ReadComparison(ctx context.Context, c *api.Client, a, b ReadTarget, concurrency, rounds int, segment time.Duration, maxReads int) (ReadCost, ReadCost) {
	out := ReadRounds(ctx, c, []ReadTarget{a, b}, concurrency, rounds, segment, maxReads, ReadMeters{})
	return out[0], out[1]
}

// ReadMeters say where to read Vault's CPU and audit log size around each
// segment of ReadRounds. Zero values measure nothing.
type ReadMeters struct {
	// VaultPID is the Vault server process (its children are its plugins).
	VaultPID int
	// AuditLog is the file audit device's file.
	AuditLog string
}

// ReadRounds runs MeasureReads on every target in turn, rounds times (a, b,
// c, a, b, c, ...), so that all see the same machine load, and returns the
// merged results in target order, with the Vault and plugin CPU and the
// audit bytes of each target's segments.
func ReadRounds(ctx context.Context, c *api.Client, targets []ReadTarget, concurrency, rounds int, segment time.Duration, maxReads int, m ReadMeters) []ReadCost {
	out := make([]ReadCost, len(targets))
	for i, t := range targets {
		out[i] = ReadCost{Name: t.Name, Path: t.Path}
	}
	for r := 0; r < rounds && ctx.Err() == nil; r++ {
		for i, t := range targets {
			var cpu0 TreeCPU
			var cpuErr error
			if m.VaultPID > 0 {
				cpu0, cpuErr = ReadTreeCPU(m.VaultPID)
			}
			audit0 := fileSize(m.AuditLog)
			tc := c
			if t.Client != nil {
				tc = t.Client
			}
			seg := MeasureReads(ctx, tc, t, concurrency, segment, maxReads)
			seg.AuditBytes = fileSize(m.AuditLog) - audit0
			if m.VaultPID > 0 && cpuErr == nil {
				if cpu1, err := ReadTreeCPU(m.VaultPID); err == nil {
					self, kids := cpu1.Since(cpu0)
					seg.VaultCPU = self
					for _, d := range kids {
						seg.PluginCPU += d
					}
				}
			}
			out[i].merge(seg)
		}
	}
	return out
}

// WindowSize returns the number of keys one read of target returns (only
// the count is kept).
func WindowSize(ctx context.Context, c *api.Client, target ReadTarget) (int, error) {
	s, err := c.Logical().ReadWithDataWithContext(ctx, target.Path, target.Query)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", target.Path, err)
	}
	if s == nil || s.Data == nil {
		return 0, fmt.Errorf("read %s: no data", target.Path)
	}
	keys, ok := s.Data["keys"].([]any)
	if !ok {
		return 0, fmt.Errorf("read %s: keys: want a list, got %T", target.Path, s.Data["keys"])
	}
	return len(keys), nil
}
