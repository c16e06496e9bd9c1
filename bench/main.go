// Command bench measures deltasync against the read floor measured in the
// same run (every file the case needs read in parallel with plain reads),
// and against the peers that are installed, on the same files in the same
// run, and writes a report: JSON (every run), Markdown (a table) and SVG
// (charts).
//
//	go run ./bench -quick                      # < 2 minutes, what CI runs
//	go run ./bench -out report -size 4G        # the full run of the README
//
// Each measured operation runs in a process of its own, observed from
// outside: wall time, CPU time (its children included), peak anonymous
// memory (RssAnon sampled every 5 ms) and VmHWM, and the bytes the kernel
// charged it for reading and writing storage (/proc/PID/io). Cold runs
// first write back and drop the files' cached pages (fsync +
// posix_fadvise DONTNEED; drop_caches is not permitted here). Every synced
// or seeded target is compared with its source afterwards: a wrong target
// fails the run loudly.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
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
	dir       string
	out       string
	size      int64
	sizes     []int64
	block     int64
	changes   []float64
	patterns  []string
	runs      int
	caches    []string
	cases     []string
	deltasync string
	peers     []peer
	// ab is an earlier build measured beside this one (-ab): its
	// deltasync binary and its bench program (for its compare child).
	ab, abBench string
	quick       bool
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func run() error {
	var c config
	var size, sizes, block, changes, caches, cases, patterns string
	var peerFlags multi
	flag.BoolVar(&c.quick, "quick", false, "256 MiB images, 3 runs, the main cases: well under two minutes")
	flag.StringVar(&c.dir, "dir", os.TempDir(), "folder in which a scratch folder for the images is made (on the disk to measure)")
	flag.StringVar(&c.out, "out", "bench-report", "folder for the report (report.json, report.md, report.svg)")
	flag.StringVar(&size, "size", "4G", "image size of the delta and seed cases (K, M, G suffixes)")
	flag.StringVar(&sizes, "sizes", "1G,4G,16G", "image sizes of the scale case")
	flag.StringVar(&block, "block", "64K", "block size")
	flag.StringVar(&changes, "changes", "0.001,0.01,0.1", "fractions of blocks changed in the sync case")
	flag.StringVar(&patterns, "patterns", "scattered,clustered", "where the sync case's changed blocks are: scattered (at random), clustered (in runs)")
	flag.IntVar(&c.runs, "runs", 3, "runs of each measurement (median, min and max are reported)")
	flag.StringVar(&caches, "cache", "warm,cold", "page-cache states to measure: warm, cold")
	flag.StringVar(&cases, "cases", "compare,sync,subblock,seed", "cases, comma separated: compare, sync, subblock, seed, scale, agent, azurite")
	flag.StringVar(&c.deltasync, "deltasync", "", "deltasync binary to measure (default: built from this module)")
	abDir := flag.String("ab", "", "a checkout of an earlier build (e.g. a git worktree): its deltasync and its bench compare are built and measured beside this build's, interleaved, as deltasync-ab, in the compare and sync cases")
	render := flag.String("render", "", "write the report from these report.json files (comma-separated, merged in order) instead of measuring")
	flag.Var(&peerFlags, "peer", "another tool to measure, NAME=COMMAND with {src} and {dst} (repeatable); rsync is measured when installed")
	flag.Parse()
	if *render != "" {
		return renderReports(strings.Split(*render, ","), c.out)
	}
	if c.quick {
		size, sizes, changes, c.runs = "256M", "64M,256M", "0.01", 3
		if !isSet("cases") {
			cases = "compare,sync,seed"
		}
	}
	var err error
	if c.size, err = parseSize(size); err != nil {
		return err
	}
	if c.block, err = parseSize(block); err != nil {
		return err
	}
	for _, s := range strings.Split(sizes, ",") {
		n, err := parseSize(s)
		if err != nil {
			return err
		}
		c.sizes = append(c.sizes, n)
	}
	for _, s := range strings.Split(changes, ",") {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f < 0 || f > 1 {
			return fmt.Errorf("bad change fraction %q", s)
		}
		c.changes = append(c.changes, f)
	}
	for _, p := range strings.Split(patterns, ",") {
		if p != "scattered" && p != "clustered" {
			return fmt.Errorf("bad pattern %q: want scattered or clustered", p)
		}
		c.patterns = append(c.patterns, p)
	}
	c.caches = strings.Split(caches, ",")
	c.cases = strings.Split(cases, ",")
	if c.peers, err = findPeers(peerFlags); err != nil {
		return err
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return err
	}
	// A scratch folder of this run's own: runs may go on side by side.
	if c.dir, err = os.MkdirTemp(c.dir, "deltasync-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(c.dir)
	if c.deltasync == "" {
		if c.deltasync, err = buildDeltasync(c.dir); err != nil {
			return err
		}
	}
	if *abDir != "" {
		if c.ab, c.abBench, err = buildAB(*abDir, c.dir); err != nil {
			return err
		}
	}
	ctx := context.Background()
	rep := &Report{Started: time.Now().UTC(), Machine: machine(), Command: strings.Join(append([]string{"go run ./bench"}, os.Args[1:]...), " "), Peers: peerStatus(c.peers)}
	for _, cs := range c.cases {
		fn, ok := cases_[cs]
		if !ok {
			return fmt.Errorf("unknown case %q", cs)
		}
		if err := fn(ctx, &c, rep); err != nil {
			return fmt.Errorf("case %s: %w", cs, err)
		}
	}
	rep.Finished = time.Now().UTC()
	return rep.write(c.out)
}

func isSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	t := strings.TrimSpace(s)
	switch {
	case strings.HasSuffix(t, "K"):
		mult, t = 1<<10, strings.TrimSuffix(t, "K")
	case strings.HasSuffix(t, "M"):
		mult, t = 1<<20, strings.TrimSuffix(t, "M")
	case strings.HasSuffix(t, "G"):
		mult, t = 1<<30, strings.TrimSuffix(t, "G")
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
