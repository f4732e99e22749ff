package bench

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"sort"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteTTFBPlot draws the time to first byte of the RTT measurement as
// cumulative distributions: one panel per RTT (rows) and TLS version
// (columns), one line per scenario, with dashed vertical lines at 3 and 4
// round trips (TCP + 1-RTT handshake + request, and the extra round trip of
// a full TLS 1.2 handshake), and writes it as a PNG to w.
func WriteTTFBPlot(w io.Writer, results []RTTResult) error {
	keys := rttKeys(results)
	if len(keys) == 0 {
		return fmt.Errorf("ttfb plot: no completed RTT run to draw")
	}
	var rtts []float64
	tlsSet := map[string]bool{}
	seenRTT := map[float64]bool{}
	for _, k := range keys {
		v := float64(k.RTT)
		if !seenRTT[v] {
			seenRTT[v] = true
			rtts = append(rtts, v)
		}
		tlsSet[k.TLS] = true
	}
	sort.Float64s(rtts)
	tlss := sortedKeys(tlsSet)
	plots := make([][]*plot.Plot, len(rtts))
	for i, rv := range rtts {
		plots[i] = make([]*plot.Plot, len(tlss))
		for j, tv := range tlss {
			p, err := ttfbPanel(results, rttKey{RTT: time.Duration(rv), TLS: tv})
			if err != nil {
				return err
			}
			plots[i][j] = p
		}
	}
	width := vg.Length(len(tlss)) * 6 * vg.Inch
	height := vg.Length(len(rtts)) * 3.6 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(96))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rtts), Cols: len(tlss), PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j := range plots[i] {
			plots[i][j].Draw(canvases[i][j])
		}
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("ttfb plot: write png: %w", err)
	}
	return nil
}

func ttfbPanel(results []RTTResult, k rttKey) (*plot.Plot, error) {
	p := plot.New()
	rttMS := float64(k.RTT) / 1e6
	p.Title.Text = fmt.Sprintf("TLS %s, RTT %s: time to first byte", k.TLS, k.RTT)
	p.X.Label.Text = "ms from TCP dial to first response byte (dashed: 3 and 4 round trips)"
	p.Y.Label.Text = "share of connections at or below"
	// The band above 1 holds the legend, so that it never hides a line;
	// ticks are only drawn from 0 to 1.
	p.Y.Min, p.Y.Max = 0, 1.3
	p.Y.Tick.Marker = plot.ConstantTicks{{Value: 0, Label: "0"}, {Value: 0.25, Label: "0.25"},
		{Value: 0.5, Label: "0.5"}, {Value: 0.75, Label: "0.75"}, {Value: 1, Label: "1"}}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Millimeter * 2
	p.Legend.YOffs = -vg.Millimeter * 2
	p.Add(plotter.NewGrid())
	xmax := 4.6 * rttMS
	for _, x := range results {
		if x.Err != "" || x.RTT != k.RTT || x.TLS != k.TLS {
			continue
		}
		all := append(append([]float64(nil), x.FullMS...), x.ResumedMS...)
		if len(all) == 0 {
			continue
		}
		sort.Float64s(all)
		xys := make(plotter.XYs, 0, len(all)+1)
		xys = append(xys, plotter.XY{X: all[0], Y: 0})
		for i, v := range all {
			xys = append(xys, plotter.XY{X: v, Y: float64(i+1) / float64(len(all))})
		}
		xmax = math.Max(xmax, math.Min(all[len(all)-1]*1.02, 8*rttMS))
		line, err := plotter.NewLine(xys)
		if err != nil {
			return nil, fmt.Errorf("ttfb plot: %s: %w", x.Label, err)
		}
		line.LineStyle.Color = colorOf(x.Scenario)
		line.LineStyle.Width = vg.Points(2)
		p.Add(line)
		p.Legend.Add(fmt.Sprintf("%s: p50 %s ms, %s resumed", x.Label, ms0(x.All.P50), pct(float64(x.Resumed)/float64(max(x.Connections, 1)))), line)
	}
	for _, n := range []float64{3, 4} {
		m, err := plotter.NewLine(plotter.XYs{{X: n * rttMS, Y: 0}, {X: n * rttMS, Y: 1.02}})
		if err != nil {
			return nil, err
		}
		m.LineStyle.Color = color.RGBA{R: 90, G: 90, B: 90, A: 255}
		m.LineStyle.Width = vg.Points(1)
		m.LineStyle.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(m)
	}
	p.X.Min, p.X.Max = 2*rttMS, xmax
	return p, nil
}
