package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestReportMarkdownHasEverySectionAndNoNaN(t *testing.T) {
	runs := syntheticRuns()
	runs[1].ErrorSamples = map[string]int{"handshake: remote error | bad": 2}
	runs = append(runs, RunResult{Scenario: "static", Label: "2: one static shared key", TLS: "1.3", Cert: "RSA-2048", Err: "serve child: no answer"})
	SetRelSingle(runs)
	rep := &Report{
		Started: time.Unix(0, 0), Finished: time.Unix(300, 0), Machine: ReadMachine(), LoadStart: "0.10 0.20 0.30", LoadEnd: "1.00 2.00 3.00",
		Settings: Settings{Users: 300, Concurrency: 4, RotationPeriod: 5 * time.Second, ReadFormat: "nginx", ReadRounds: 2, ReadSegment: 4 * time.Second},
		Runs:     runs,
		Hook: []HookCost{{TLS: "1.3", Cert: "ECDSA-P256",
			Plain: HookSide{Config: "plain", Connections: 100, Resumed: 99, CPU: 20 * time.Millisecond, WindowKeys: 1},
			Hook:  HookSide{Config: "hook", Connections: 100, Resumed: 99, CPU: 22 * time.Millisecond, WindowKeys: 14, HitCurrent: 90, HitOther: 9}}},
		Decrypt: []DecryptResult{{Window: 1, NsPerOp: 1000}, {Window: 14, NsPerOp: 9000}},
		Reads: &ReadResult{Keys: ReadCost{Path: "ticketkeys/keys/x", Reads: 100, Elapsed: time.Second, P99: 4 * time.Millisecond}, KV: ReadCost{Path: "kv/data/x", Reads: 200, Elapsed: time.Second, P99: 2 * time.Millisecond, VaultCPU: 200 * 800 * time.Microsecond},
			KeysNoDefault: &ReadCost{Path: "ticketkeys/keys/x", Reads: 150, Elapsed: time.Second, VaultCPU: 150 * 700 * time.Microsecond, PluginCPU: 150 * 200 * time.Microsecond},
			Concurrency:   8, WindowKeys: 14},
		Notes:    []string{"skipped something"},
		PlotFile: "resumption.png",
	}
	var b bytes.Buffer
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"## Summary", "| 4: ticketkeys (Vault) | 4 | 100.0% | 4 | 0.0 | 1.00× |", "| 3: rotation without a window | 4 | 89.0% | 4 | 110.0 |",
		"with the client hook and a 14-key window is 1.10×", "achieves 0.50× the reads per second",
		"with a node token of bootstrap/node-approle.sh (no `default` policy), a keyring read achieves 0.75× the reads per second of the same-size KV v2 read with a token that carries `default`, at 900.0 µs of Vault + plugin CPU against 800.0.",
		"## Machine", "load average (1, 5, 15 min) at start | 0.10 0.20 0.30", "at end | 1.00 2.00 3.00",
		"## Cluster resumption", "| 1.3 | RSA-2048 | 4: ticketkeys (Vault) |", "1.00× (reference)",
		"failed: serve child: no answer", `handshake: remote error \| bad`,
		"![share of offered tickets resumed", "(resumption.png)",
		"## Hook cost", "| 14 |", "1.10×", "9 by another key",
		"## Ticket decryption by window size", "| 14 | 9000 | 0 | 9.00× |",
		"## Vault read cost", "reads per second 0.50×, p99 2.00×",
		"## How each number was measured", "getrusage(RUSAGE_SELF)",
		"## Notes", "- skipped something",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "NaN") || strings.Contains(md, "Inf") {
		t.Errorf("report prints NaN or Inf:\n%s", md)
	}
	// The cells of a rotating run: switch resumed 890 of 1000 (110 failed) over 1 rotation.
	if !strings.Contains(md, "| 3: rotation without a window | 1000 | 100 | 1000 | 89.0% | 110 | 1 | 110.0 |") {
		t.Errorf("switch row is not as computed:\n%s", md)
	}

	var j bytes.Buffer
	if err := rep.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(j.Bytes(), &back); err != nil {
		t.Fatalf("benchmark.json does not decode: %v", err)
	}
	if len(back.Runs) != len(rep.Runs) || back.Runs[3].Series[5].Resumed != 40 || back.Hook[0].Ratio() != rep.Hook[0].Ratio() {
		t.Fatal("benchmark.json does not round-trip the measurements")
	}
}
