package bench

import (
	"bytes"
	"image"
	"image/png"
	"testing"
	"time"
)

func syntheticRuns() []RunResult {
	mk := func(id, label, tlsv, cert string, rate func(i int) int, rot []float64) RunResult {
		r := RunResult{Scenario: id, Label: label, TLS: tlsv, Cert: cert, Nodes: 3, Rotations: rot, Rotates: rot != nil,
			Connections: 1000, ServerCPU: time.Second, P50: time.Millisecond, P99: 5 * time.Millisecond,
			Start: time.Unix(0, 0), End: time.Unix(10, 0)}
		for i := 0; i < 10; i++ {
			r.Series = append(r.Series, SecondPoint{T: float64(i) + 0.5, Offered: 100, Resumed: rate(i)})
			r.Offered += 100
			r.Resumed += rate(i)
		}
		return r
	}
	var runs []RunResult
	for _, v := range []string{"1.3", "1.2"} {
		for _, c := range []string{"RSA-2048", "ECDSA-P256"} {
			runs = append(runs,
				mk("single", "single node (reference)", v, c, func(int) int { return 100 }, nil),
				mk("own", "1: own default keys", v, c, func(int) int { return 33 }, nil),
				mk("static", "2: one static shared key", v, c, func(int) int { return 100 }, nil),
				mk("switch", "3: rotation without a window", v, c, func(i int) int { return []int{100, 100, 100, 100, 100, 40, 60, 90, 100, 100}[i] }, []float64{5}),
				mk("ticketkeys", "4: ticketkeys (Vault)", v, c, func(int) int { return 100 }, []float64{4.2}),
			)
		}
	}
	return runs
}

func TestWritePlotDrawsEveryScenarioInEveryPanel(t *testing.T) {
	var buf bytes.Buffer
	if err := WritePlot(&buf, syntheticRuns()); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() < 1000 || b.Dy() < 600 {
		t.Fatalf("image %dx%d, want a 2x2 grid of readable panels", b.Dx(), b.Dy())
	}
	// Every scenario's color appears in every quadrant.
	byColor := map[[3]uint8]string{}
	for id, c := range scenarioColors {
		byColor[[3]uint8{c.R, c.G, c.B}] = id
	}
	found := map[[2]int]map[string]bool{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			var px [3]uint8
			if rgba, ok := img.(*image.RGBA); ok {
				i := rgba.PixOffset(x, y)
				px = [3]uint8{rgba.Pix[i], rgba.Pix[i+1], rgba.Pix[i+2]}
			} else {
				r, g, bl, _ := img.At(x, y).RGBA()
				px = [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8)}
			}
			id, ok := byColor[px]
			if !ok {
				continue
			}
			q := [2]int{2 * (x - b.Min.X) / b.Dx(), 2 * (y - b.Min.Y) / b.Dy()}
			if found[q] == nil {
				found[q] = map[string]bool{}
			}
			found[q][id] = true
		}
	}
	for qx := 0; qx < 2; qx++ {
		for qy := 0; qy < 2; qy++ {
			for id := range scenarioColors {
				if !found[[2]int{qx, qy}][id] {
					t.Errorf("panel (%d,%d): no pixel of scenario %s's color", qx, qy, id)
				}
			}
		}
	}
}

func TestWritePlotNeedsARun(t *testing.T) {
	if err := WritePlot(&bytes.Buffer{}, []RunResult{{Scenario: "own", Err: "failed"}}); err == nil {
		t.Fatal("a plot of failed runs only was written")
	}
}
