package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// scenarioColors gives every scenario the same color in every panel.
var scenarioColors = map[string]color.RGBA{
	"single":     {R: 120, G: 120, B: 120, A: 255},
	"own":        {R: 214, G: 39, B: 40, A: 255},
	"static":     {R: 31, G: 119, B: 180, A: 255},
	"switch":     {R: 255, G: 127, B: 14, A: 255},
	"ticketkeys": {R: 44, G: 160, B: 44, A: 255},
}

// scenarioWidths makes lines drawn earlier wider, so that lines at the same
// values (several at 100%) stay visible as nested bands.
var scenarioWidths = map[string]float64{"single": 6, "own": 4.5, "static": 3.6, "switch": 2.6, "ticketkeys": 1.6}

// legendBand is the bottom of the y axis: the band below 0 holds the legend.
const legendBand = -0.62

func widthOf(id string) vg.Length {
	if w, ok := scenarioWidths[id]; ok {
		return vg.Points(w)
	}
	return vg.Points(1.6)
}

func colorOf(id string) color.RGBA {
	if c, ok := scenarioColors[id]; ok {
		return c
	}
	return color.RGBA{A: 255}
}

// panelKey groups runs into panels: one per TLS version and certificate.
type panelKey struct{ TLS, Cert string }

// WritePlot draws the share of offered tickets resumed in each second of
// every run, one line per scenario, one panel per TLS version and
// certificate, with each rotation instant marked by a dashed vertical line in
// its scenario's color, and writes it as a PNG to w.
func WritePlot(w io.Writer, runs []RunResult) error {
	var keys []panelKey
	seen := map[panelKey]bool{}
	tlsSet, certSet := map[string]bool{}, map[string]bool{}
	for _, r := range runs {
		k := panelKey{r.TLS, r.Cert}
		if r.Err != "" || seen[k] {
			continue
		}
		seen[k] = true
		keys = append(keys, k)
		tlsSet[r.TLS], certSet[r.Cert] = true, true
	}
	if len(keys) == 0 {
		return fmt.Errorf("plot: no completed run to draw")
	}
	tlss, certs := sortedKeys(tlsSet), sortedKeys(certSet)
	rows, cols := len(tlss), len(certs)
	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
		for j := range plots[i] {
			p, err := panel(runs, panelKey{tlss[i], certs[j]})
			if err != nil {
				return err
			}
			plots[i][j] = p
		}
	}
	width := vg.Length(cols) * 7 * vg.Inch
	height := vg.Length(rows) * 4.2 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(96))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j := range plots[i] {
			plots[i][j].Draw(canvases[i][j])
		}
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("plot: write png: %w", err)
	}
	return nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// panel draws one TLS version and certificate.
func panel(runs []RunResult, k panelKey) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("TLS %s, %s: share of offered tickets resumed, per second", k.TLS, k.Cert)
	p.X.Label.Text = "seconds since the load started (dashed: rotation instants)"
	p.Y.Label.Text = "resumed / offered"
	// The band below 0 holds the legend, so that it never hides a line;
	// ticks are only drawn from 0 to 1.
	p.Y.Min, p.Y.Max = legendBand, 1.05
	p.Y.Tick.Marker = plot.ConstantTicks{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"},
		{Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 1, Label: "1"}}
	p.Legend.Top = false
	p.Legend.Left = true
	p.Legend.XOffs = vg.Millimeter * 2
	p.Legend.YOffs = vg.Millimeter * 1
	p.Add(plotter.NewGrid())
	xmax := 1.0
	for _, r := range runs {
		if r.TLS != k.TLS || r.Cert != k.Cert || r.Err != "" {
			continue
		}
		c := colorOf(r.Scenario)
		var xys plotter.XYs
		for _, pt := range r.Series {
			if v := pt.Rate(); !math.IsNaN(v) {
				xys = append(xys, plotter.XY{X: pt.T, Y: v})
			}
			xmax = math.Max(xmax, pt.T+0.5)
		}
		if len(xys) == 0 {
			continue
		}
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("plot: %s: %w", r.Label, err)
		}
		line.LineStyle.Color = c
		line.LineStyle.Width = widthOf(r.Scenario)
		p.Add(line)
		label := fmt.Sprintf("%s: %s resumed", r.Label, pct(r.ResumeShare()))
		if len(r.Rotations) > 0 {
			label += fmt.Sprintf(", %d rotations", len(r.Rotations))
		}
		p.Legend.Add(label, line)
		for _, x := range r.Rotations {
			m, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: 1.05}})
			if err != nil {
				return nil, fmt.Errorf("plot: rotation marker: %w", err)
			}
			m.LineStyle.Color = c
			m.LineStyle.Width = vg.Points(1)
			m.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			p.Add(m)
		}
	}
	p.X.Min, p.X.Max = 0, xmax
	return p, nil
}
