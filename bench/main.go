// Command bench measures deltasync against the read floor measured in the
// same run (every file it needs read in parallel with plain reads), and
// against peers when they are installed.
//
//	go run ./bench -quick
//	go run ./bench -size 4G -runs 5 -cases compare
//
// Each measured operation runs in a child process, observed from outside:
// wall time, CPU time, peak anonymous memory (RssAnon sampled every 5 ms),
// VmHWM, and the bytes the kernel charged it for reading and writing
// storage (/proc/PID/io). Cold runs first write and drop the files' cached
// pages (fsync + posix_fadvise DONTNEED; drop_caches is not permitted).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		if err := child(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	dir    string
	size   int64
	block  int64
	change float64
	runs   int
	caches []string
	cases  []string
	keep   bool
}

func run() error {
	var c config
	var size, block, caches, cases string
	quick := flag.Bool("quick", false, "small images, few runs: finishes in well under two minutes")
	flag.StringVar(&c.dir, "dir", filepath.Join(os.TempDir(), "deltasync-bench"), "folder for the images (on the disk to measure)")
	flag.StringVar(&size, "size", "4G", "image size (K, M, G suffixes)")
	flag.StringVar(&block, "block", "64K", "block size")
	flag.Float64Var(&c.change, "change", 0.01, "fraction of blocks changed")
	flag.IntVar(&c.runs, "runs", 3, "runs of each measurement (median, min, max reported)")
	flag.StringVar(&caches, "cache", "warm,cold", "cache states to measure: warm, cold")
	flag.StringVar(&cases, "cases", "compare", "cases to run, comma separated: compare")
	flag.BoolVar(&c.keep, "keep", false, "keep the images afterwards")
	flag.Parse()
	var err error
	if *quick {
		size, c.runs = "256M", 3
	}
	if c.size, err = parseSize(size); err != nil {
		return err
	}
	if c.block, err = parseSize(block); err != nil {
		return err
	}
	c.caches = strings.Split(caches, ",")
	c.cases = strings.Split(cases, ",")
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	ctx := context.Background()
	for _, cs := range c.cases {
		switch cs {
		case "compare":
			if err := caseCompare(ctx, &c); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown case %q", cs)
		}
	}
	return nil
}

// caseCompare compares two images differing in c.change of their blocks,
// against the floor of reading both in parallel.
func caseCompare(ctx context.Context, c *config) error {
	a := filepath.Join(c.dir, "a.img")
	b := filepath.Join(c.dir, "b.img")
	fmt.Printf("making %s images (%.1f%% of %s blocks changed) in %s\n", human(c.size), c.change*100, human(c.block), c.dir)
	if err := makeImage(a, c.size, 0, 1); err != nil {
		return err
	}
	n, err := changeBlocks(a, b, c.block, c.change, 0, false, 2)
	if err != nil {
		return err
	}
	if !c.keep {
		defer os.Remove(a)
		defer os.Remove(b)
	}
	want := int64(n) * c.block
	for _, cache := range c.caches {
		var floor, cmp []Measure
		for r := 0; r < c.runs; r++ {
			for _, which := range []string{"floor", "compare"} {
				if err := prepare(cache, a, b); err != nil {
					return err
				}
				var m Measure
				if which == "floor" {
					m, err = runChild(ctx, false, "floor", a, b)
					floor = append(floor, m)
				} else {
					m, err = runChild(ctx, false, "compare", a, b, strconv.FormatInt(c.block, 10))
					cmp = append(cmp, m)
				}
				if err != nil {
					return err
				}
			}
			if got := int64(cmp[len(cmp)-1].Child["bytes_differ"].(float64)); got != want {
				return fmt.Errorf("compare found %d differing bytes, %d were changed: WRONG RESULT", got, want)
			}
		}
		printRow("compare "+cache, c.size, floor, cmp)
	}
	return nil
}

func prepare(cache string, files ...string) error {
	switch cache {
	case "cold":
		return evict(files...)
	case "warm":
		return warm(files...)
	}
	return fmt.Errorf("unknown cache state %q", cache)
}

// stat returns the median, min and max of f over ms.
func stat(ms []Measure, f func(Measure) float64) (med, lo, hi float64) {
	v := make([]float64, len(ms))
	for i, m := range ms {
		v[i] = f(m)
	}
	sort.Float64s(v)
	return v[len(v)/2], v[0], v[len(v)-1]
}

func printRow(name string, size int64, floor, ms []Measure) {
	fmed, _, _ := stat(floor, func(m Measure) float64 { return m.Seconds })
	med, lo, hi := stat(ms, func(m Measure) float64 { return m.Seconds })
	ratios := make([]Measure, len(ms))
	for i := range ms {
		ratios[i].Seconds = ms[i].Seconds / floor[i].Seconds
	}
	rmed, rlo, rhi := stat(ratios, func(m Measure) float64 { return m.Seconds })
	anon, _, anonHi := stat(ms, func(m Measure) float64 { return m.PeakAnonMiB })
	hwm, _, _ := stat(ms, func(m Measure) float64 { return m.VmHWMMiB })
	cpu, _, _ := stat(ms, func(m Measure) float64 { return m.CPUSeconds })
	fmt.Printf("%-16s %s: %.3fs (min %.3f max %.3f)  floor %.3fs  ratio %.2fx (min %.2f max %.2f)  cpu %.2fs  anon %.1f MiB (max %.1f)  VmHWM %.1f MiB  n=%d\n",
		name, human(size), med, lo, hi, fmed, rmed, rlo, rhi, cpu, anon, anonHi, hwm, len(ms))
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
