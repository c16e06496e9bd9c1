package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/deltasync/deltasync/blockdiff"
)

// indexFlags run one index of a fleet or of a sliced disk, as a
// Kubernetes Indexed Job's pod does (JOB_COMPLETION_INDEX), with no shell.
type indexFlags struct {
	index, count int
	fromEnv      bool
	fleet        string
}

func (x *indexFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&x.index, "index", -1, "run index I (from 0): line I of -fleet, or slice I of -count of SRC DST")
	fs.IntVar(&x.count, "count", 0, "with -index and no -fleet: SRC DST in this many slices, aligned to the block size; the last runs to the end")
	fs.BoolVar(&x.fromEnv, "index-from-env", false, "take -index from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)")
	fs.StringVar(&x.fleet, "fleet", "", "a file of 'SOURCE TARGET' lines (# starts a comment): run line -index of it, instead of SRC DST")
}

// on reports whether an index was asked for.
func (x *indexFlags) on() bool { return x.index >= 0 || x.fromEnv || x.fleet != "" }

// resolve checks the flags and picks the disks: the positional SRC DST,
// or line -index of -fleet. It returns the label of the index for the
// summary ("" when no index was asked for).
func (x *indexFlags) resolve(cmd string, pos []string) (src, dst, label string, err error) {
	if x.fromEnv {
		v, ok := os.LookupEnv("JOB_COMPLETION_INDEX")
		if !ok {
			return "", "", "", usagef(cmd, "-index-from-env: JOB_COMPLETION_INDEX is not set (a Kubernetes Indexed Job sets it)")
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			return "", "", "", usagef(cmd, "-index-from-env: JOB_COMPLETION_INDEX=%q is not an index", v)
		}
		x.index = n
	}
	if x.fleet != "" {
		if len(pos) != 0 {
			return "", "", "", usagef(cmd, "with -fleet the disks are in the file: give no SRC DST")
		}
		if x.index < 0 {
			return "", "", "", usagef(cmd, "-fleet needs -index or -index-from-env")
		}
		lines, err := readFleet(x.fleet)
		if err != nil {
			return "", "", "", err
		}
		if x.index >= len(lines) {
			return "", "", "", usagef(cmd, "-index %d: %s has %d disks (indexes 0 to %d)", x.index, x.fleet, len(lines), len(lines)-1)
		}
		if x.count != 0 && x.count != len(lines) {
			return "", "", "", usagef(cmd, "-count %d: %s has %d disks", x.count, x.fleet, len(lines))
		}
		l := lines[x.index]
		return l[0], l[1], fmt.Sprintf("index %d/%d (%s)", x.index, len(lines), x.fleet), nil
	}
	if len(pos) != 2 {
		return "", "", "", usagef(cmd, "want SRC and DST, got %d arguments", len(pos))
	}
	if !x.on() {
		return pos[0], pos[1], "", nil
	}
	if x.index < 0 || x.count < 1 || x.index >= x.count {
		return "", "", "", usagef(cmd, "-index %d of -count %d: slices need a count of at least 1 and an index below it", x.index, x.count)
	}
	return pos[0], pos[1], fmt.Sprintf("index %d/%d", x.index, x.count), nil
}

// slice returns the range of slice index of count of a size-byte disk:
// boundaries on multiples of unit, the last slice to the end (length 0).
// An empty slice (more slices than units) has ok false.
func slice(index, count int, size, unit int64) (off, length int64, ok bool) {
	per := (size + int64(count) - 1) / int64(count)
	per = (per + unit - 1) / unit * unit
	off = int64(index) * per
	if off >= size && !(index == 0 && size == 0) {
		return 0, 0, false
	}
	if index == count-1 {
		return off, 0, true
	}
	return off, min(per, size-off), true
}

// sliceUnit is the alignment of slice boundaries: the block size, and at
// least 4 KiB (the largest sector alignment of the targets).
func sliceUnit(blockSize int64) int64 {
	if blockSize == 0 {
		blockSize = blockdiff.DefaultBlockSize
	}
	u := blockSize
	for u%4096 != 0 {
		u += blockSize
	}
	return u
}

// readFleet reads a fleet file: 'SOURCE TARGET' per line, # comments.
func readFleet(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-fleet: %w", err)
	}
	defer f.Close()
	return parseFleet(f, path)
}

// parseFleet parses a fleet's text; path names it in errors.
func parseFleet(r io.Reader, path string) ([][2]string, error) {
	var out [][2]string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		fs := strings.Fields(line)
		switch len(fs) {
		case 0:
			continue
		case 2:
			out = append(out, [2]string{fs[0], fs[1]})
		default:
			return nil, fmt.Errorf("-fleet %s, line %d: want 'SOURCE TARGET', got %q", path, n, strings.TrimSpace(line))
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-fleet %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-fleet %s lists no disks", path)
	}
	return out, nil
}
