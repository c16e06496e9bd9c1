package main

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

type point struct{ x, y float64 }

type series struct {
	name string
	pts  []point
	dash bool
}

type chart struct {
	title, xlabel, ylabel string
	logX, logY            bool
	series                []series
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

// svg draws the report's charts: sync throughput and bytes written against
// the change rate, and sync time against disk size.
func (r *Report) svg() string {
	var charts []chart
	thr := chart{title: "Sync throughput against change rate (disk size / wall time)", xlabel: "blocks changed (%)", ylabel: "throughput (MB/s, log)", logX: true, logY: true}
	sent := chart{title: "Bytes written to the target against change rate", xlabel: "blocks changed (%)", ylabel: "written (MiB, log)", logX: true, logY: true}
	scale := chart{title: "Sync time against disk size (1% changed)", xlabel: "disk size (GiB)", ylabel: "wall time (s)"}
	add := func(c *chart, name string, dash bool, p point) {
		for i := range c.series {
			if c.series[i].name == name {
				c.series[i].pts = append(c.series[i].pts, p)
				return
			}
		}
		c.series = append(c.series, series{name: name, pts: []point{p}, dash: dash})
	}
	for _, res := range r.Results {
		sp := res.Spec
		switch sp.Case {
		case "sync":
			if sp.Pattern != "scattered" {
				continue
			}
			x := sp.Change * 100
			for _, s := range res.Summary {
				name := s.Tool + " " + sp.Cache
				add(&thr, name, sp.Cache == "cold", point{x, float64(sp.Size) / s.Seconds / 1e6})
				if s.Tool != "floor" {
					add(&sent, name, sp.Cache == "cold", point{x, math.Max(float64(s.WriteBytes), 1) / (1 << 20)})
				}
			}
			add(&sent, "changed bytes", true, point{x, float64(sp.Changed) / (1 << 20)})
		case "scale":
			for _, s := range res.Summary {
				add(&scale, s.Tool+" "+sp.Cache, sp.Cache == "cold", point{float64(sp.Size) / (1 << 30), s.Seconds})
			}
		}
	}
	for _, c := range []chart{thr, sent, scale} {
		if len(c.series) > 0 {
			charts = append(charts, c)
		}
	}
	if len(charts) == 0 {
		charts = append(charts, chart{title: "no sync or scale case in this run", xlabel: "-", ylabel: "-"})
	}
	const w, h = 760, 360
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h*len(charts), w, h*len(charts))
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for i, c := range charts {
		c.draw(&b, 0, i*h, w, h)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func (c chart) draw(b *strings.Builder, ox, oy, w, h int) {
	const left, right, top, bottom = 70, 190, 36, 48
	pw, ph := float64(w-left-right), float64(h-top-bottom)
	fmt.Fprintf(b, `<g transform="translate(%d,%d)">`+"\n", ox, oy)
	fmt.Fprintf(b, `<text x="%d" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", left, esc(c.title))
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range c.series {
		for _, p := range s.pts {
			xmin, xmax = math.Min(xmin, p.x), math.Max(xmax, p.x)
			ymin, ymax = math.Min(ymin, p.y), math.Max(ymax, p.y)
		}
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax, ymin, ymax = 0, 1, 0, 1
	}
	tx := func(v float64) float64 {
		if c.logX {
			v, xmin, xmax := math.Log10(v), math.Log10(xmin), math.Log10(xmax)
			return span(v, xmin, xmax)
		}
		return span(v, math.Min(0, xmin), xmax)
	}
	if !c.logY {
		ymin = 0
	}
	ymax *= 1.1
	ty := func(v float64) float64 {
		if c.logY {
			return span(math.Log10(v), math.Log10(ymin/1.5), math.Log10(ymax))
		}
		return span(v, ymin, ymax)
	}
	X := func(v float64) float64 { return left + tx(v)*pw }
	Y := func(v float64) float64 { return top + (1-ty(v))*ph }
	// Axes.
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top+int(ph), left+int(pw), top+int(ph))
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, top+int(ph))
	// X ticks: the data's own x values.
	var xs []float64
	seen := map[float64]bool{}
	for _, s := range c.series {
		for _, p := range s.pts {
			if !seen[p.x] {
				seen[p.x] = true
				xs = append(xs, p.x)
			}
		}
	}
	sort.Float64s(xs)
	for _, x := range xs {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/><text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n",
			X(x), top+ph, X(x), top+ph+5, X(x), top+ph+18, num(x))
	}
	// Y ticks: five, or decades on a log axis.
	var ys []float64
	if c.logY {
		for d := math.Floor(math.Log10(ymin / 1.5)); d <= math.Ceil(math.Log10(ymax)); d++ {
			if v := math.Pow(10, d); v >= ymin/1.5 && v <= ymax {
				ys = append(ys, v)
			}
		}
	} else {
		for i := 0; i <= 5; i++ {
			ys = append(ys, ymin+(ymax-ymin)*float64(i)/5)
		}
	}
	for _, y := range ys {
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n",
			left, Y(y), left+pw, Y(y), left-6, Y(y)+4, num(y))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", left+pw/2, h-10, esc(c.xlabel))
	fmt.Fprintf(b, `<text transform="translate(16,%.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+ph/2, esc(c.ylabel))
	for i, s := range c.series {
		sort.Slice(s.pts, func(a, b int) bool { return s.pts[a].x < s.pts[b].x })
		col := palette[i%len(palette)]
		var path []string
		for _, p := range s.pts {
			path = append(path, fmt.Sprintf("%.1f,%.1f", X(p.x), Y(p.y)))
		}
		dash := ""
		if s.dash {
			dash = ` stroke-dasharray="6,4"`
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", col, dash, strings.Join(path, " "))
		for _, p := range s.pts {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", X(p.x), Y(p.y), col)
		}
		ly := top + 14*i
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2"%s/><text x="%.1f" y="%d">%s</text>`+"\n",
			left+pw+12, ly, left+pw+32, ly, col, dash, left+pw+36, ly+4, esc(s.name))
	}
	b.WriteString("</g>\n")
}

func span(v, lo, hi float64) float64 {
	if hi <= lo {
		return 0.5
	}
	return (v - lo) / (hi - lo)
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.1f", v), "0"), ".")
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
