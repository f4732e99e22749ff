package bench

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProcStatReaped(t *testing.T) {
	// utime 250, stime 125, cutime 300, cstime 100 ticks; a zombie.
	st, err := parseProcStat("77 (nginx: worker) Z 42 42 42 0 -1 4194560 100 0 0 0 250 125 300 100 20 0 1 0 100 0 0")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "Z" || st.PPID != 42 || st.CPU != 3750*time.Millisecond || st.Reaped != 4*time.Second {
		t.Fatalf("parsed %+v, want state Z, ppid 42, CPU 3.75s, reaped (300+100) ticks = 4s", st)
	}
	if _, err := parseProcStat("77 (nginx) S 42 42 42 0 -1 4194560 100 0 0 0 250 125"); err == nil {
		t.Error("parsed a line that ends before cutime/cstime")
	}
}

func TestSumNginxCPU(t *testing.T) {
	master := procStat{CPU: 50 * time.Millisecond, Reaped: 300 * time.Millisecond} // an old worker exited with 300ms
	kids := []procStat{{CPU: 100 * time.Millisecond}, {State: "Z", CPU: 200 * time.Millisecond}}
	got := sumNginxCPU(master, kids)
	if got.Master != 50*time.Millisecond || got.Workers != 600*time.Millisecond {
		t.Fatalf("sumNginxCPU = %+v, want master 50ms, workers 300ms reaped + 100ms + 200ms = 600ms", got)
	}
	d := got.Sub(NginxCPU{Master: 10 * time.Millisecond, Workers: 100 * time.Millisecond})
	if d.Master != 40*time.Millisecond || d.Workers != 500*time.Millisecond {
		t.Fatalf("Sub = %+v", d)
	}
}

// TestReadNginxCPUCountsExitedChildren runs a shell (standing in for an
// nginx master) whose busy child exits and is reaped before the reading:
// its CPU must still count, through the shell's cutime.
func TestReadNginxCPUCountsExitedChildren(t *testing.T) {
	cmd := exec.Command("sh", "-c", `(i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done); echo reaped; exec sleep 60`)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "reaped\n" {
		t.Fatalf("shell said %q, %v", line, err)
	}
	got, err := ReadNginxCPU(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if got.Workers <= 0 {
		t.Fatalf("ReadNginxCPU = %+v: the exited child's CPU is missing", got)
	}
}

func TestParseVmRSS(t *testing.T) {
	n, err := parseVmRSS("Name:\tnginx\nVmPeak:\t  99 kB\nVmRSS:\t    9216 kB\nRssAnon:\t 1 kB\n")
	if err != nil || n != 9216*1024 {
		t.Fatalf("parseVmRSS = %d, %v; want 9 MiB", n, err)
	}
	for _, bad := range []string{"Name:\tnginx\n", "VmRSS:\t12 MB\n", "VmRSS:\tx kB\n"} {
		if _, err := parseVmRSS(bad); err == nil {
			t.Errorf("parseVmRSS(%q) took it", bad)
		}
	}
}

func TestNginxWindowFiles(t *testing.T) {
	var keys [][]byte
	for i := range 5 {
		keys = append(keys, bytes.Repeat([]byte{byte(i)}, 80))
	}
	c := &NginxCluster{Spec: NginxClusterSpec{Setup: NginxLua}, dir: t.TempDir(), keys: keys}
	// keys 0..4, oldest first: current 3, next 4, previous 2 and 1.
	want := []byte{3, 4, 2, 1}
	w := c.window()
	if len(w) != len(want) {
		t.Fatalf("window has %d keys, want %d", len(w), len(want))
	}
	for i := range want {
		if w[i][0] != want[i] {
			t.Fatalf("window[%d] is key %d, want %d (current, next, previous newest first)", i, w[i][0], want[i])
		}
	}
	if err := c.writeKeys(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(c.windowPath())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if len(lines) != 5 || lines[4] != "" {
		t.Fatalf("window file has %d parts, want 4 lines each ending in a newline", len(lines))
	}
	first, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(lines[0], "\n"))
	if err != nil || !bytes.Equal(first, keys[3]) {
		t.Fatal("window file's first line is not the current key")
	}
	c.Spec.Setup = NginxReload
	if err := c.writeKeys(); err != nil {
		t.Fatal(err)
	}
	for i, k := range want {
		b, err := os.ReadFile(c.keyPath(i))
		if err != nil || !bytes.Equal(b, keys[k]) {
			t.Fatalf("key file %d is not key %d (%v)", i, k, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.dir, "ticket0.key.tmp")); err == nil {
		t.Error("a temporary file was left behind")
	}
}

func nginxTestReport() *NginxReport {
	run := func(setup, tls string, conns, offered, resumed int, cpu time.Duration, rotations int, err string) NginxRun {
		r := NginxRun{Setup: setup, RunResult: RunResult{Scenario: "nginx-" + setup, Label: NginxSetupLabel(setup), TLS: tls,
			Connections: conns, Offered: offered, Resumed: resumed, ServerCPU: cpu, Err: err}}
		for i := range rotations {
			r.Rotations = append(r.Rotations, float64(4*(i+1)))
		}
		r.WorkerCPU = cpu
		return r
	}
	return &NginxReport{
		Settings: NginxSettings{Builds: []string{"debian 1.22.1", "debian 1.22.1", "openresty-1.27.1 1.27.1"}, LongPerNode: 8},
		Runs: []NginxRun{
			run(NginxOwn, "1.3", 1000, 900, 300, 500*time.Millisecond, 0, ""),
			run(NginxOwn, "1.2", 1000, 900, 300, 300*time.Millisecond, 0, ""),
			run(NginxLua, "1.3", 1000, 1000, 1000, 400*time.Millisecond, 3, ""),
			run(NginxLua, "1.2", 3000, 3000, 2990, 200*time.Millisecond, 3, ""),
			run(NginxReload, "1.3", 0, 0, 0, 0, 0, "boom"),
		},
		Long: []NginxLongResult{
			{Setup: NginxLua, Label: NginxSetupLabel(NginxLua), KeepAlive: 24, Streams: 24, Observe: 13 * time.Second},
			{Setup: NginxReload, Label: NginxSetupLabel(NginxReload), KeepAlive: 24, KeepAliveEnded: 24, Streams: 24,
				OldWorkers: 3, OldWorkersAtEnd: 3, Linger: 13 * time.Second, Observe: 13 * time.Second, OldRSSPeak: 27 << 20},
			{Setup: NginxReload, Label: NginxSetupLabel(NginxReload), ShutdownTimeout: 10 * time.Second, KeepAlive: 24, KeepAliveEnded: 24,
				Streams: 24, StreamsEnded: 24, StreamsLastEnd: 10100 * time.Millisecond, OldWorkers: 3, Linger: 10200 * time.Millisecond, Observe: 13 * time.Second},
		},
		Switch: []NginxSwitchResult{
			{Label: NginxSetupLabel(NginxLua), Activations: 3, Gap: 2 * time.Second, Probes: 600, LateMax: 1500 * time.Microsecond, SwitchedBy: 41 * time.Millisecond},
			{Label: NginxSetupLabel(NginxLua), Activations: 3, Gap: 2 * time.Second, Err: "probe of node 1: refused"},
		},
	}
}

func TestNginxSummary(t *testing.T) {
	sum := nginxTestReport().Summary()
	if len(sum) != 2 {
		t.Fatalf("summary has %d rows, want own and lua (the failed reload run is left out): %+v", len(sum), sum)
	}
	own, lua := sum[0], sum[1]
	if own.Setup != NginxOwn || lua.Setup != NginxLua {
		t.Fatalf("rows %s, %s: want own then lua", own.Setup, lua.Setup)
	}
	// Summed over TLS versions, each connection weighing alike.
	if own.Connections != 2000 || own.Offered != 1800 || own.Resumed != 600 || math.Abs(own.Share()-1.0/3) > 1e-9 {
		t.Errorf("own: %+v, share %f", own, own.Share())
	}
	if lua.Rotations != 6 || math.Abs(lua.Share()-3990.0/4000) > 1e-9 {
		t.Errorf("lua: %+v, share %f", lua, lua.Share())
	}
	// own 800ms/2000 = 400µs; lua 600ms/4000 = 150µs.
	if own.CPUPerConn() != 400*time.Microsecond || lua.CPUPerConn() != 150*time.Microsecond {
		t.Errorf("CPU per connection own %s, lua %s; want 400µs, 150µs", own.CPUPerConn(), lua.CPUPerConn())
	}
	if own.RelOwn != 1 || math.Abs(lua.RelOwn-0.375) > 1e-9 {
		t.Errorf("vs own: own %f, lua %f; want 1, 0.375", own.RelOwn, lua.RelOwn)
	}
}

func TestWriteNginx(t *testing.T) {
	var b strings.Builder
	(&Report{Nginx: nginxTestReport()}).writeNginx(&b)
	md := b.String()
	for _, want := range []string{
		"debian 1.22.1, debian 1.22.1, openresty-1.27.1 1.27.1",
		"| own keys per node (nginx default) | 2 | 33.3% | 0 | 400.0 | 1.00 |",
		"| ticketkeys via the Lua module | 2 | 99.8% | 6 | 150.0 | 0.38 |",
		"| 1.3 | shared key files + reload per rotation | failed: boom |",
		"| 1.2 | ticketkeys via the Lua module | 3000 | 3000 | 99.7% | 3.3 | 3 | 0 | 0 |",
		"| ticketkeys via the Lua module | unset | 0 of 24 | 0 of 24 | - | 0 | 0 | - |",
		"| shared key files + reload per rotation | unset | 24 of 24 | 0 of 24 | - | 3 | 3 | >= 13 (watch ended) | 27.0 |",
		"| shared key files + reload per rotation | 10s | 24 of 24 | 24 of 24 | 10.1 | 3 | 0 | 10.2 |",
		"| ticketkeys via the Lua module | 3 | 2 | 600 | 1.500 | 41.000 | 0 | 0 |",
		"| ticketkeys via the Lua module | 3 | 2 | failed: probe of node 1: refused |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("nginx section lacks %q:\n%s", want, md)
		}
	}
	b.Reset()
	(&Report{}).writeNginx(&b)
	if !strings.Contains(b.String(), "Not measured") {
		t.Errorf("empty nginx section: %q", b.String())
	}
}
