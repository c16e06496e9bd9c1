package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var cases_ = map[string]func(context.Context, *config, *Report) error{
	"compare":  caseCompare,
	"sync":     caseSync,
	"subblock": caseSubblock,
	"seed":     caseSeed,
	"scale":    caseScale,
	"azurite":  caseAzurite, // bench/azurite.go; not in the default list
	"agent":    caseAgent,   // bench/agent.go; not in the default list
}

// tool is one way of doing a case's job, measured in its own process.
type tool struct {
	name     string
	argv     func(src, dst string) []string
	external bool // argv is a command, not a bench child operation
	mutates  bool // writes the target: reset before, verified after
}

// peer is another sync tool, measured when installed.
type peer struct {
	name    string
	command string // with {src} and {dst}
	path    string // resolved executable, "" when absent
}

func findPeers(flags []string) ([]peer, error) {
	ps := []peer{{name: "rsync", command: "rsync -I --inplace --no-whole-file {src} {dst}"}}
	for _, f := range flags {
		name, cmd, ok := strings.Cut(f, "=")
		if !ok || !strings.Contains(cmd, "{src}") || !strings.Contains(cmd, "{dst}") {
			return nil, fmt.Errorf("-peer %q: want NAME=COMMAND with {src} and {dst}", f)
		}
		ps = append(ps, peer{name: name, command: cmd})
	}
	for i := range ps {
		exe := strings.Fields(ps[i].command)[0]
		if p, err := exec.LookPath(exe); err == nil {
			ps[i].path = p
		}
	}
	return ps, nil
}

func peerStatus(ps []peer) map[string]string {
	m := map[string]string{}
	for _, p := range ps {
		if p.path == "" {
			m[p.name] = "absent"
		} else {
			m[p.name] = p.path
		}
	}
	return m
}

func (p peer) tool() tool {
	return tool{name: p.name, external: true, mutates: true, argv: func(src, dst string) []string {
		var out []string
		for _, f := range strings.Fields(p.command) {
			out = append(out, strings.NewReplacer("{src}", src, "{dst}", dst).Replace(f))
		}
		return out
	}}
}

func buildDeltasync(dir string) (string, error) {
	out := filepath.Join(dir, "deltasync")
	cmd := exec.Command("go", "build", "-o", out, "github.com/deltasync/deltasync/cmd/deltasync")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building deltasync: %w", err)
	}
	return out, nil
}

// buildAB builds the deltasync binary and the bench program of the
// checkout in dir, an earlier build to compare with.
func buildAB(dir, out string) (deltasync, bench string, err error) {
	deltasync, bench = filepath.Join(out, "deltasync-ab"), filepath.Join(out, "bench-ab")
	for _, b := range [][2]string{{deltasync, "./cmd/deltasync"}, {bench, "./bench"}} {
		cmd := exec.Command("go", "build", "-o", b[0], b[1])
		cmd.Dir, cmd.Stderr = dir, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", "", fmt.Errorf("building %s of the -ab checkout %s: %w", b[1], dir, err)
		}
	}
	return deltasync, bench, nil
}

func floorTool(both bool) tool {
	return tool{name: "floor", argv: func(src, dst string) []string {
		if both {
			return []string{"floor", src, dst}
		}
		return []string{"floor", src}
	}}
}

// spec describes one measured case.
type spec struct {
	Case      string  `json:"case"`
	Size      int64   `json:"size"`
	Block     int64   `json:"block"`
	Change    float64 `json:"change,omitempty"`
	Pattern   string  `json:"pattern,omitempty"`
	WriteLen  int64   `json:"write_len,omitempty"`
	ZeroFrac  float64 `json:"zero_frac,omitempty"`
	Refine    int64   `json:"refine,omitempty"`
	Cache     string  `json:"cache"`
	Changed   int64   `json:"changed_bytes"`
	BaseBytes int64   `json:"base_bytes,omitempty"`
}

// measure runs every tool c.runs times on src and a target reset from orig
// before each run (removed when orig is ""), interleaving tools, and adds
// the results to rep.
func measure(ctx context.Context, c *config, rep *Report, sp spec, src, orig string, tools []tool) error {
	dst := filepath.Join(c.dir, "target.img")
	res := Result{Spec: sp, Runs: map[string][]Measure{}}
	for r := 0; r < c.runs; r++ {
		for _, t := range tools {
			files := []string{src}
			if t.mutates || orig != "" {
				if err := resetTarget(orig, dst); err != nil {
					return err
				}
				if orig != "" {
					files = append(files, dst)
				}
			}
			if err := prepare(sp.Cache, files...); err != nil {
				return err
			}
			m, err := runChild(ctx, t.external, t.argv(src, dst)...)
			if err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			if t.mutates {
				if err := identical(src, dst); err != nil {
					return fmt.Errorf("%s left a WRONG TARGET: %w", t.name, err)
				}
				m.Verified = true
			}
			res.Runs[t.name] = append(res.Runs[t.name], m)
		}
	}
	res.summarise()
	rep.Results = append(rep.Results, res)
	res.print(os.Stdout)
	return nil
}

func resetTarget(orig, dst string) error {
	_ = os.Remove(dst)
	if orig == "" {
		return nil
	}
	return copyFile(orig, dst)
}

// identical compares two files byte for byte, independently of deltasync.
func identical(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 8<<20), make([]byte, 8<<20)
	for off := int64(0); ; {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("%s and %s differ in [%d,%d)", a, b, off, off+int64(max(na, nb)))
		}
		off += int64(na)
		if ea != nil || eb != nil {
			if (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF) {
				return nil
			}
			return fmt.Errorf("reading: %v / %v", ea, eb)
		}
	}
}

func prepare(cache string, files ...string) error {
	// Let no earlier run's writeback (rsync leaves a gigabyte of dirty
	// pages behind in some cases) overlap the next measurement.
	syscall.Sync()
	switch cache {
	case "cold":
		return evict(files...)
	case "warm":
		return warm(files...)
	}
	return fmt.Errorf("unknown cache state %q", cache)
}

func (c *config) syncTools(extra ...string) []tool {
	ts := []tool{floorTool(true), {name: "deltasync", external: true, mutates: true, argv: func(src, dst string) []string {
		return append([]string{c.deltasync, "sync", "--json", "--block-size", strconv.FormatInt(c.block, 10)}, append(extra, src, dst)...)
	}}}
	if c.ab != "" {
		ts = append(ts, tool{name: "deltasync-ab", external: true, mutates: true, argv: func(src, dst string) []string {
			return append([]string{c.ab, "sync", "--json", "--block-size", strconv.FormatInt(c.block, 10)}, append(extra, src, dst)...)
		}})
	}
	for _, p := range c.peers {
		if p.path != "" {
			ts = append(ts, p.tool())
		}
	}
	return ts
}

func caseCompare(ctx context.Context, c *config, rep *Report) error {
	src, orig, changed, err := makePair(c, c.size, 0.01, 0, false)
	if err != nil {
		return err
	}
	defer os.Remove(src)
	defer os.Remove(orig)
	for _, cache := range c.caches {
		sp := spec{Case: "compare", Size: c.size, Block: c.block, Change: 0.01, Pattern: "scattered", Cache: cache, Changed: changed}
		tools := []tool{floorTool(true), {name: "deltasync", argv: func(src, dst string) []string {
			return []string{"compare", src, dst, strconv.FormatInt(c.block, 10)}
		}}}
		if c.abBench != "" {
			tools = append(tools, tool{name: "deltasync-ab", external: true, argv: func(src, dst string) []string {
				return []string{c.abBench, "child", "compare", src, dst, strconv.FormatInt(c.block, 10)}
			}})
		}
		if err := measure(ctx, c, rep, sp, src, orig, tools); err != nil {
			return err
		}
		if got := rep.last().childInt("deltasync", "bytes_differ"); got != changed {
			return fmt.Errorf("compare found %d differing bytes, %d were changed: WRONG RESULT", got, changed)
		}
	}
	return nil
}

func makePair(c *config, size int64, frac float64, writeLen int64, clustered bool) (src, orig string, changed int64, err error) {
	src = filepath.Join(c.dir, "source.img")
	orig = filepath.Join(c.dir, "target.orig")
	fmt.Printf("# making %s images, %.2f%% of %s blocks changed", human(size), frac*100, human(c.block))
	if writeLen > 0 {
		fmt.Printf(" by %s writes", human(writeLen))
	}
	if clustered {
		fmt.Print(", clustered")
	}
	fmt.Println()
	if err = makeImage(src, size, 0, 1); err != nil {
		return
	}
	n, err := changeBlocks(src, orig, c.block, frac, writeLen, clustered, 2)
	if writeLen == 0 {
		writeLen = c.block
	}
	return src, orig, int64(n) * writeLen, err
}

func caseSync(ctx context.Context, c *config, rep *Report) error {
	for _, pattern := range c.patterns {
		for _, frac := range c.changes {
			src, orig, changed, err := makePair(c, c.size, frac, 0, pattern == "clustered")
			if err != nil {
				return err
			}
			for _, cache := range c.caches {
				sp := spec{Case: "sync", Size: c.size, Block: c.block, Change: frac, Pattern: pattern, Cache: cache, Changed: changed}
				if err := measure(ctx, c, rep, sp, src, orig, c.syncTools()); err != nil {
					return err
				}
			}
			os.Remove(src)
			os.Remove(orig)
			if c.quick {
				break
			}
		}
		if c.quick {
			break
		}
	}
	return nil
}

// caseSubblock changes 4 KiB inside 1% of the 64 KiB blocks: what
// refinement saves in bytes written.
func caseSubblock(ctx context.Context, c *config, rep *Report) error {
	const w = 4 << 10
	src, orig, changed, err := makePair(c, c.size, 0.01, w, false)
	if err != nil {
		return err
	}
	defer os.Remove(src)
	defer os.Remove(orig)
	for _, refine := range []int64{0, w} {
		sp := spec{Case: "subblock", Size: c.size, Block: c.block, Change: 0.01, Pattern: "scattered", WriteLen: w, Refine: refine, Cache: "warm", Changed: changed}
		if err := measure(ctx, c, rep, sp, src, orig, c.syncTools("--refine", strconv.FormatInt(refine, 10))); err != nil {
			return err
		}
	}
	return nil
}

func caseSeed(ctx context.Context, c *config, rep *Report) error {
	for _, zf := range []float64{0, 0.5, 0.9} {
		src := filepath.Join(c.dir, "source.img")
		fmt.Printf("# making a %s image, %.0f%% zeros\n", human(c.size), zf*100)
		if err := makeImage(src, c.size, zf, 3); err != nil {
			return err
		}
		nonzero, err := dataBytes(src)
		if err != nil {
			return err
		}
		for _, cache := range c.caches {
			sp := spec{Case: "seed", Size: c.size, Block: c.block, ZeroFrac: zf, Cache: cache, Changed: nonzero}
			tools := []tool{floorTool(false),
				{name: "deltasync", external: true, mutates: true, argv: func(src, dst string) []string {
					return []string{c.deltasync, "seed", "--json", src, dst}
				}},
				{name: "cp", external: true, mutates: true, argv: func(src, dst string) []string {
					return []string{"cp", "--sparse=always", src, dst}
				}},
				// Durable on return, like deltasync's default.
				{name: "cp+fsync", external: true, mutates: true, argv: func(src, dst string) []string {
					return []string{"sh", "-c", `cp --sparse=always "$0" "$1" && sync "$1"`, src, dst}
				}},
				// As durable as cp: the OS writes back when it pleases.
				{name: "deltasync-nofsync", external: true, mutates: true, argv: func(src, dst string) []string {
					return []string{c.deltasync, "seed", "--json", "-fsync", "none", src, dst}
				}},
			}
			if err := measure(ctx, c, rep, sp, src, "", tools); err != nil {
				return err
			}
		}
		os.Remove(src)
		if c.quick && zf == 0 {
			continue
		}
	}
	return nil
}

// caseScale syncs 1% changes at several sizes: time should grow linearly,
// memory stay flat.
func caseScale(ctx context.Context, c *config, rep *Report) error {
	for _, size := range c.sizes {
		src, orig, changed, err := makePair(c, size, 0.01, 0, false)
		if err != nil {
			return err
		}
		for _, cache := range c.caches {
			if cache == "warm" && 2*size > memTotal()*6/10 {
				rep.note("scale %s warm not measured: the two images (%s) do not fit in this machine's page cache", human(size), human(2*size))
				continue
			}
			sp := spec{Case: "scale", Size: size, Block: c.block, Change: 0.01, Pattern: "scattered", Cache: cache, Changed: changed}
			if err := measure(ctx, c, rep, sp, src, orig, c.syncTools()); err != nil {
				return err
			}
		}
		os.Remove(src)
		os.Remove(orig)
	}
	return nil
}

// memTotal returns the machine's memory in bytes (MemTotal).
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
