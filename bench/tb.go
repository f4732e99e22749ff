package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TB adapts the harness to the testing.TB-based helpers of the repository
// (internal/vaulttest, internal/testcert), so that the benchmark starts Vault
// and makes certificates exactly as the end-to-end tests do instead of
// duplicating that code.
//
// Every exported method of testing.TB is implemented here; the embedded
// interface is nil and only supplies testing.TB's unexported method, which
// nothing outside package testing can call. Fatal, Fatalf and FailNow panic
// with a *Fatal value that Do recovers; Cleanup functions run, last in first
// out, in Close. A TB is safe for concurrent use.
type TB struct {
	testing.TB // nil: never called, see the type comment

	name string
	out  io.Writer
	ctx  context.Context

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	skipped  bool
	dir      string // root of TempDir directories, removed by Close
	seq      int
}

// Fatal is the panic value of TB.Fatal, TB.Fatalf and TB.FailNow.
type Fatal struct{ Msg string }

func (f *Fatal) Error() string { return f.Msg }

// NewTB returns a TB named name that writes log lines to out (os.Stderr if
// nil) and whose Context is ctx.
func NewTB(ctx context.Context, name string, out io.Writer) *TB {
	if out == nil {
		out = os.Stderr
	}
	return &TB{name: name, out: out, ctx: ctx}
}

// Do runs f and turns a TB fatal failure inside it into an error (nil when
// f returns normally). Other panics propagate.
func (t *TB) Do(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			fe, ok := r.(*Fatal)
			if !ok {
				panic(r)
			}
			err = fe
		}
	}()
	f()
	return nil
}

// Close runs the cleanup functions, last registered first, and removes the
// temporary directories. It is safe to call more than once.
func (t *TB) Close() {
	for {
		t.mu.Lock()
		n := len(t.cleanups)
		if n == 0 {
			dir := t.dir
			t.dir = ""
			t.mu.Unlock()
			if dir != "" {
				os.RemoveAll(dir)
			}
			return
		}
		f := t.cleanups[n-1]
		t.cleanups = t.cleanups[:n-1]
		t.mu.Unlock()
		_ = t.Do(f) // a failing cleanup must not stop the others
	}
}

// ArtifactDir returns a directory for the run's artifacts (a TempDir).
func (t *TB) ArtifactDir() string { return t.TempDir() }

// Attr logs a key/value attribute.
func (t *TB) Attr(key, value string) { t.Logf("attr %s=%s", key, value) }

// Cleanup registers f to run in Close.
func (t *TB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

// Error logs and marks the TB failed.
func (t *TB) Error(args ...any) { t.Log(args...); t.Fail() }

// Errorf logs and marks the TB failed.
func (t *TB) Errorf(format string, args ...any) { t.Logf(format, args...); t.Fail() }

// Fail marks the TB failed.
func (t *TB) Fail() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
}

// FailNow marks the TB failed and stops the current Do.
func (t *TB) FailNow() {
	t.Fail()
	panic(&Fatal{Msg: t.name + ": failed"})
}

// Failed reports whether the TB was marked failed.
func (t *TB) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

// Fatal logs, marks the TB failed and stops the current Do.
func (t *TB) Fatal(args ...any) {
	msg := fmt.Sprint(args...)
	t.Log(msg)
	t.Fail()
	panic(&Fatal{Msg: msg})
}

// Fatalf logs, marks the TB failed and stops the current Do.
func (t *TB) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	t.Fail()
	panic(&Fatal{Msg: msg})
}

// Helper does nothing (there is no call-site reporting outside go test).
func (t *TB) Helper() {}

// Log writes one line to the TB's output.
func (t *TB) Log(args ...any) { fmt.Fprintf(t.out, "%s: %s\n", t.name, fmt.Sprint(args...)) }

// Logf writes one formatted line to the TB's output.
func (t *TB) Logf(format string, args ...any) {
	fmt.Fprintf(t.out, "%s: %s\n", t.name, fmt.Sprintf(format, args...))
}

// Name returns the TB's name.
func (t *TB) Name() string { return t.name }

// Setenv sets an environment variable and restores it in Close.
func (t *TB) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	if err := os.Setenv(key, value); err != nil {
		t.Fatalf("setenv %s: %v", key, err)
	}
	t.Cleanup(func() {
		if had {
			os.Setenv(key, old)
		} else {
			os.Unsetenv(key)
		}
	})
}

// Chdir changes the working directory and restores it in Close.
func (t *TB) Chdir(dir string) {
	old, err := os.Getwd()
	if err != nil {
		t.Fatalf("chdir %s: getwd: %v", dir, err)
	}
	if err := os.Chdir(dir); err != nil {
		t.Fatalf("chdir %s: %v", dir, err)
	}
	t.Cleanup(func() { os.Chdir(old) })
}

// Skip logs and stops the current Do as skipped (reported as an error by Do).
func (t *TB) Skip(args ...any) { t.Log(args...); t.SkipNow() }

// SkipNow stops the current Do as skipped.
func (t *TB) SkipNow() {
	t.mu.Lock()
	t.skipped = true
	t.mu.Unlock()
	panic(&Fatal{Msg: t.name + ": skipped"})
}

// Skipf logs and stops the current Do as skipped.
func (t *TB) Skipf(format string, args ...any) { t.Logf(format, args...); t.SkipNow() }

// Skipped reports whether SkipNow was called.
func (t *TB) Skipped() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.skipped
}

// TempDir returns a new directory that Close removes.
func (t *TB) TempDir() string {
	d, err := t.newTempDir()
	if err != nil {
		t.Fatalf("temp dir: %v", err)
	}
	return d
}

func (t *TB) newTempDir() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dir == "" {
		d, err := os.MkdirTemp("", "ticketkeys-bench-")
		if err != nil {
			return "", err
		}
		t.dir = d
	}
	t.seq++
	d := filepath.Join(t.dir, fmt.Sprintf("%03d", t.seq))
	if err := os.Mkdir(d, 0o700); err != nil {
		return "", err
	}
	return d, nil
}

// Context returns the TB's context.
func (t *TB) Context() context.Context { return t.ctx }

// Output returns the TB's log writer.
func (t *TB) Output() io.Writer { return t.out }
